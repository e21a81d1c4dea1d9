//! The document and the router agree: every documented operation is served and every served
//! route is documented; every error status an operation documents is answered by it for some
//! input (a table of inputs, which must cover exactly the documented statuses).

#[path = "support/provision_fakes.rs"]
mod provision_fakes;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;
use vesemir_core::journal::JournalEntry;
use vesemir_core::provision::{ProvisionEvent, Reservation, ReservationRequest, ReserveError, VmName};
use vesemir_core::Event;
use vesemir_http::store::vms::{NewVm, VmFilter, VmInserted, VmRow, VmUpdate};
use vesemir_http::store::{
    DeploymentRecord, Finish, HostRecord, Inserted, Interrupted, ListFilter, NewDeployment, SqliteStore,
    Store, StoreError,
};
use vesemir_http::{FixedPorts, Server};

/// Every documented operation: (method, path) → its documented statuses.
fn operations(doc: &Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let statuses = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|s| s.parse::<u16>().expect("a status code"))
                .collect();
            out.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    out
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let t = TestServer::start(Fleet::new(1)).await;
    let doc = t.raw(Method::GET, "/openapi.json", None, None, &[]).await.json;
    let documented = operations(&doc);
    assert!(documented.len() >= 13, "{documented:?}");
    let paths: BTreeSet<&String> = documented.keys().map(|(_, path)| path).collect();
    for path in paths {
        let concrete = path.replace("{id}", "999999");
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let reply = t.raw(method.clone(), &concrete, Some(ADMIN), Some("{}"), &[]).await;
            if documented.contains_key(&(method.to_string(), path.clone())) {
                assert_ne!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented, not served"
                );
                let fallback = reply.json["detail"].as_str().is_some_and(|d| d.starts_with("no such path"));
                assert!(!fallback, "{method} {path} is documented but falls through: {}", reply.text);
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented: {}",
                    reply.text
                );
                assert_eq!(reply.headers["content-type"], "application/problem+json");
                assert!(reply.headers.contains_key("allow"), "a 405 names the methods");
            }
        }
    }
    // Undocumented paths fall through to the 404 problem.
    for path in ["/v1", "/v1/deployments/1/unknown", "/docs/x", "/v2/deployments"] {
        let reply = t.raw(Method::GET, path, Some(ADMIN), None, &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {}", reply.text);
        assert_eq!(reply.json["instance"], path);
    }
    // Routes are registered only through utoipa-axum's `routes!`, which documents each one: no
    // plain axum route can be served without appearing in the document.
    let table = include_str!("../src/routes.rs");
    for plain in [".route(", ".route_service(", ".nest(", ".nest_service("] {
        assert!(
            !table.contains(plain),
            "routes.rs registers a route with {plain}, which the document misses"
        );
    }
}

/// A store that works, answers slowly (past the request timeout), fails, or cannot be reached
/// (a database this server lost), as the test says.
#[derive(Debug)]
struct Switch {
    inner: SqliteStore,
    mode: AtomicU8,
}

const WORKS: u8 = 0;
const SLOW: u8 = 1;
const FAILS: u8 = 2;
const UNREACHABLE: u8 = 3;

impl Switch {
    async fn gate(&self) -> Result<(), StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            SLOW => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            }
            FAILS => Err(StoreError::new("reading", "disk I/O error (injected)")),
            UNREACHABLE => Err(StoreError::unavailable("reading", "no answer within 5s (injected)")),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Store for Switch {
    async fn insert(&self, d: &NewDeployment) -> Result<Inserted, StoreError> {
        self.gate().await?;
        self.inner.insert(d).await
    }
    async fn get(&self, id: i64) -> Result<Option<DeploymentRecord>, StoreError> {
        self.gate().await?;
        self.inner.get(id).await
    }
    async fn by_idempotency_key(&self, who: &str, key: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        self.gate().await?;
        self.inner.by_idempotency_key(who, key).await
    }
    async fn hosts(&self, id: i64) -> Result<Vec<HostRecord>, StoreError> {
        self.gate().await?;
        self.inner.hosts(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.gate().await?;
        self.inner.list(filter).await
    }
    async fn mark_running(&self, id: i64, started_ms: i64) -> Result<(), StoreError> {
        self.inner.mark_running(id, started_ms).await
    }
    async fn set_plan(&self, id: i64, hosts: &[HostRecord]) -> Result<(), StoreError> {
        self.inner.set_plan(id, hosts).await
    }
    async fn mark_cancel_requested(&self, id: i64) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.mark_cancel_requested(id).await
    }
    async fn append_events(&self, id: i64, events: &[Event], hosts: &[HostRecord]) -> Result<(), StoreError> {
        self.inner.append_events(id, events, hosts).await
    }
    async fn events_after(&self, id: i64, after: u64, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.gate().await?;
        self.inner.events_after(id, after, limit).await
    }
    async fn finish(&self, id: i64, finish: &Finish) -> Result<(), StoreError> {
        self.inner.finish(id, finish).await
    }
    async fn interrupt_unfinished(&self, now_ms: i64) -> Result<Vec<Interrupted>, StoreError> {
        self.inner.interrupt_unfinished(now_ms).await
    }
    async fn append_journal(&self, id: i64, entry: &JournalEntry) -> Result<(), StoreError> {
        self.inner.append_journal(id, entry).await
    }
    async fn journal(&self, id: i64) -> Result<Vec<JournalEntry>, StoreError> {
        self.gate().await?;
        self.inner.journal(id).await
    }
    async fn set_out_of_rotation(&self, id: i64, hosts: &[String]) -> Result<(), StoreError> {
        self.inner.set_out_of_rotation(id, hosts).await
    }
    async fn set_origin(&self, id: i64, origin: &vesemir_http::store::Origin) -> Result<(), StoreError> {
        self.inner.set_origin(id, origin).await
    }
    async fn origin(&self, id: i64) -> Result<Option<vesemir_http::store::Origin>, StoreError> {
        self.gate().await?;
        self.inner.origin(id).await
    }
    async fn set_error(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.inner.set_error(id, error).await
    }
    async fn prune_events(&self, ended_before_ms: i64) -> Result<u64, StoreError> {
        self.inner.prune_events(ended_before_ms).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.gate().await?;
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
        self.gate().await?;
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
        self.gate().await?;
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
    async fn record_promotion_wait(
        &self,
        wait: &vesemir_http::store::PromotionWait,
    ) -> Result<bool, StoreError> {
        self.inner.record_promotion_wait(wait).await
    }
    async fn promotion_wait(
        &self,
        id: i64,
    ) -> Result<Option<vesemir_http::store::PromotionWait>, StoreError> {
        self.inner.promotion_wait(id).await
    }
    async fn set_promotion_status(
        &self,
        id: i64,
        from: vesemir_http::store::PromotionStatus,
        to: vesemir_http::store::PromotionStatus,
        by: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.inner.set_promotion_status(id, from, to, by, at_ms).await
    }
    // Issue 19: VMs.
    async fn insert_vm(&self, vm: &NewVm, max_per_owner: Option<u32>) -> Result<VmInserted, StoreError> {
        self.gate().await?;
        self.inner.insert_vm(vm, max_per_owner).await
    }
    async fn vm(&self, name: &VmName) -> Result<Option<VmRow>, StoreError> {
        self.gate().await?;
        self.inner.vm(name).await
    }
    async fn list_vms(&self, filter: &VmFilter) -> Result<Vec<VmRow>, StoreError> {
        self.gate().await?;
        self.inner.list_vms(filter).await
    }
    async fn update_vm(&self, id: i64, update: &VmUpdate) -> Result<(), StoreError> {
        self.inner.update_vm(id, update).await
    }
    async fn update_vm_from(
        &self,
        id: i64,
        from: vesemir_http::store::vms::VmStatus,
        update: &VmUpdate,
    ) -> Result<bool, StoreError> {
        self.inner.update_vm_from(id, from, update).await
    }
    async fn append_vm_events(&self, id: i64, events: &[ProvisionEvent]) -> Result<(), StoreError> {
        self.inner.append_vm_events(id, events).await
    }
    async fn vm_events_after(
        &self,
        id: i64,
        after: u64,
        limit: i64,
    ) -> Result<Vec<ProvisionEvent>, StoreError> {
        self.gate().await?;
        self.inner.vm_events_after(id, after, limit).await
    }
    async fn interrupt_unfinished_vms(&self, now_ms: i64) -> Result<Vec<VmRow>, StoreError> {
        self.inner.interrupt_unfinished_vms(now_ms).await
    }
    async fn reserve_vm(&self, request: &ReservationRequest) -> Result<Reservation, ReserveError> {
        self.inner.reserve_vm(request).await
    }
    async fn release_vm(&self, vm: &VmName) -> Result<(), StoreError> {
        self.inner.release_vm(vm).await
    }
    async fn vm_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.inner.vm_reservations().await
    }
}

/// One call of the table: the operation, the status it must answer, and how to call it.
struct Case {
    method: Method,
    path: &'static str,
    status: u16,
    token: Option<&'static str>,
    concrete: String,
    body: Option<String>,
    headers: Vec<(&'static str, &'static str)>,
}

fn case(method: Method, path: &'static str, status: u16, token: Option<&'static str>, id: i64) -> Case {
    Case {
        method,
        path,
        status,
        token,
        concrete: path.replace("{id}", &id.to_string()),
        body: None,
        headers: Vec::new(),
    }
}

impl Case {
    fn body(mut self, body: impl Into<String>, content_type: &'static str) -> Self {
        self.body = Some(body.into());
        self.headers.push(("content-type", content_type));
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn query(mut self, query: &str) -> Self {
        self.concrete.push_str(query);
        self
    }
    /// Calls `concrete` (a path with its parameters filled in) for the operation `path`.
    fn at(mut self, concrete: &str) -> Self {
        self.concrete = concrete.to_owned();
        self
    }
}

/// A payments token with the `read` role only: it reads payments' deployments, gives no orders.
const READER: &str = "tok-payments-reader-0123456789";

/// The history and rollback of shop in production, and of an application never deployed.
const HISTORY: &str = "/v1/applications/{application}/environments/{environment}/history";
const ROLLBACK: &str = "/v1/applications/{application}/environments/{environment}/rollback";

/// Sends `c` as it is (its own Content-Type, if any) and reads the answer.
async fn send(router: &axum::Router, c: &Case) -> Reply {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(c.method.clone()).uri(&c.concrete);
    if let Some(token) = c.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in &c.headers {
        request = request.header(*name, *value);
    }
    let body = axum::body::Body::from(c.body.clone().unwrap_or_default());
    let response = router.clone().oneshot(request.body(body).expect("a request")).await.expect("infallible");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
        .await
        .expect("an answer within 30 s")
        .expect("a body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, text, json }
}

/// Runs `cases` on `router`: each must answer its status, as a problem.
async fn run(router: &axum::Router, cases: &[Case], answered: &mut BTreeSet<(String, String, u16)>) {
    for c in cases {
        let reply = send(router, c).await;
        assert_eq!(reply.status.as_u16(), c.status, "{} {}: {}", c.method, c.concrete, reply.text);
        if c.status >= 400 {
            assert_eq!(reply.headers["content-type"], "application/problem+json", "{}", c.concrete);
            assert_eq!(reply.json["status"], c.status, "{}", reply.text);
        }
        answered.insert((c.method.to_string(), c.path.to_owned(), c.status));
    }
}

const ORDERS: [&str; 4] = [
    "/v1/deployments/{id}/cancel",
    "/v1/deployments/{id}/confirm",
    "/v1/deployments/{id}/pause",
    "/v1/deployments/{id}/resume",
];

/// Promotion by confirmation, and the delivery log of notifications.
const CONFIRM_PROMOTION: &str = "/v1/deployments/{id}/promotion/confirm";
const DECLINE_PROMOTION: &str = "/v1/deployments/{id}/promotion/decline";
const NOTIFICATIONS: &str = "/v1/deployments/{id}/notifications";

/// The CI hook route.
const HOOK: &str = "/v1/hooks/{name}";
/// The secret of the test's hooks.
const HOOK_SECRET: &str = "contract-hook-secret-0123456789";

/// Hooks `shop-ci` (shop in production, refusing while busy) and `a1-ci` (a1 in production),
/// their secret in a 0600 file in `dir`.
fn add_hooks(dir: &std::path::Path, config: &mut vesemir_http::ServerConfig) {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("hook.secret");
    std::fs::write(&secret, HOOK_SECRET).expect("writes");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for unit in &mut config.units {
        let (name, when_busy) = match (unit.application.as_str(), unit.environment.as_str()) {
            ("shop", "production") => ("shop-ci", "reject"),
            ("a1", "production") => ("a1-ci", "queue"),
            _ => continue,
        };
        let text = format!(
            "name = \"{name}\"\nsecret_file = \"{}\"\nversion = \"/version\"\nwhen_busy = \"{when_busy}\"\n",
            secret.display()
        );
        unit.hooks = vec![toml::from_str(&text).expect("a hook")];
    }
}

/// A delivery of `body` to hook `name`, signed, with delivery id `delivery`.
fn hook_case(name: &str, status: u16, body: &str, delivery: &'static str) -> Case {
    let signature: &'static str =
        Box::leak(vesemir_http::hooks::sign(HOOK_SECRET.as_bytes(), body.as_bytes()).into_boxed_str());
    case(Method::POST, HOOK, status, None, 0)
        .at(&format!("/v1/hooks/{name}"))
        .body(body.to_owned(), "application/json")
        .header("x-vesemir-signature", signature)
        .header("x-vesemir-delivery", delivery)
}

#[tokio::test]
async fn each_documented_error_status_is_answered_by_its_route() {
    let mut answered = BTreeSet::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("v.db");
    let fleet = Fleet::new(1);
    let mut settings = config(&database);
    settings.limits.request_timeout = Duration::from_secs(1);
    settings.limits.max_body_bytes = 4096;
    add_hooks(dir.path(), &mut settings);
    settings.tokens.push(vesemir_http::TokenConfig {
        roles: vec![vesemir_http::Role::Read],
        ..token("payments-reader", READER, Some("payments"))
    });
    let store = Arc::new(Switch {
        inner: SqliteStore::open(&database).await.expect("opens"),
        mode: AtomicU8::new(WORKS),
    });
    let server = Server::with_store(&settings, Arc::new(FixedPorts(fleet.ports())), store.clone())
        .await
        .expect("opens");
    let router = server.router();
    let (get, post) = (Method::GET, Method::POST);

    // A payments deployment that ends at once (its unit's backend does not exist).
    let ended = fleet.body("broken", "production", "payments");
    let reply =
        call(&router, post.clone(), "/v1/deployments", Some(PAYMENTS), Some(&ended.to_string()), &[]).await;
    let id = reply.json["id"].as_i64().unwrap_or_else(|| panic!("accepted: {}", reply.text));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while call(&router, get.clone(), &format!("/v1/deployments/{id}"), Some(ADMIN), None, &[]).await.json
        ["status"]
        != "failed"
    {
        assert!(tokio::time::Instant::now() < deadline, "deployment {id} never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let valid = fleet.body("shop", "production", "payments").to_string();
    let mut invalid = fleet.body("shop", "production", "payments");
    invalid["strategy"]["concurrency"] = json!(0);
    let on_deployment = [
        (get.clone(), "/v1/deployments/{id}"),
        (get.clone(), "/v1/deployments/{id}/events"),
        (post.clone(), "/v1/deployments/{id}/recover"),
        (post.clone(), "/v1/deployments/{id}/restore"),
        (post.clone(), "/v1/deployments/{id}/retry"),
        (post.clone(), CONFIRM_PROMOTION),
        (post.clone(), DECLINE_PROMOTION),
        (get.clone(), NOTIFICATIONS),
    ]
    .into_iter()
    .chain(ORDERS.map(|path| (post.clone(), path)));
    let broken_rollback = "/v1/applications/broken/environments/production/rollback";
    let mut cases = vec![
        case(get.clone(), "/v1/deployments", 400, Some(ADMIN), id).query("?status=nope"),
        case(get.clone(), "/v1/deployments", 401, None, id),
        case(get.clone(), "/v1/deployments", 403, Some(SEARCH), id).query("?team=payments"),
        case(post.clone(), "/v1/deployments", 400, Some(PAYMENTS), id).body("{", "application/json"),
        case(post.clone(), "/v1/deployments", 401, None, id).body(valid.clone(), "application/json"),
        case(post.clone(), "/v1/deployments", 403, Some(SEARCH), id).body(valid.clone(), "application/json"),
        case(post.clone(), "/v1/deployments", 413, Some(PAYMENTS), id)
            .body(format!("{{\"application\": \"{}\"}}", "a".repeat(5000)), "application/json"),
        case(post.clone(), "/v1/deployments", 415, Some(PAYMENTS), id).body(valid.clone(), "text/plain"),
        case(post.clone(), "/v1/deployments", 422, Some(PAYMENTS), id)
            .body(invalid.to_string(), "application/json"),
        case(get.clone(), "/v1/deployments/{id}/events", 400, Some(ADMIN), id).header("last-event-id", "x"),
        case(post.clone(), "/v1/deployments/{id}/recover", 409, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments/{id}/restore", 400, Some(ADMIN), id)
            .body(r#"{"hosts": ["web-01;reload"]}"#, "application/json"),
        case(post.clone(), "/v1/deployments/{id}/restore", 409, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments/{id}/retry", 400, Some(ADMIN), id)
            .body(r#"{"hosts": ["web-01"]}"#, "application/json"),
        case(get.clone(), HISTORY, 401, None, id).at("/v1/applications/shop/environments/production/history"),
        case(post.clone(), ROLLBACK, 400, Some(PAYMENTS), id)
            .at(broken_rollback)
            .body("{", "application/json"),
        case(post.clone(), ROLLBACK, 401, None, id).at(broken_rollback),
        // Another team's application has no deployment it may see.
        case(post.clone(), ROLLBACK, 404, Some(SEARCH), id).at(broken_rollback),
        case(post.clone(), ROLLBACK, 403, Some(READER), id).at(broken_rollback),
        // Its only deployment failed: no version to go back to.
        case(post.clone(), ROLLBACK, 409, Some(PAYMENTS), id).at(broken_rollback),
        case(post.clone(), ROLLBACK, 422, Some(PAYMENTS), id)
            .at(broken_rollback)
            .body(r#"{"to": "not a version!"}"#, "application/json"),
    ];
    cases.extend([
        hook_case("shop-ci", 400, "{ not json", "c-1"),
        case(post.clone(), HOOK, 401, None, id)
            .at("/v1/hooks/shop-ci")
            .body(r#"{"version": "1.0.0"}"#, "application/json")
            .header("x-vesemir-signature", "sha256=00")
            .header("x-vesemir-delivery", "c-2"),
        hook_case("nope", 404, r#"{"version": "1.0.0"}"#, "c-3"),
        hook_case("shop-ci", 413, &format!("{{\"version\": \"{}\"}}", "1".repeat(5000)), "c-4"),
        hook_case("shop-ci", 422, r#"{"version": "not a version!"}"#, "c-5"),
    ]);
    for (method, path) in on_deployment {
        cases.push(case(method.clone(), path, 401, None, id));
        // Another team's deployment is not found, as one that does not exist.
        cases.push(case(method.clone(), path, 404, Some(SEARCH), id));
        cases.push(case(method.clone(), path, 404, Some(ADMIN), 999_999));
        if method == Method::POST {
            cases.push(case(method, path, 403, Some(READER), id));
        }
    }
    cases.extend(ORDERS.map(|path| case(post.clone(), path, 409, Some(ADMIN), id)));
    // No promotion waits for the failed deployment.
    cases.push(case(post.clone(), CONFIRM_PROMOTION, 409, Some(ADMIN), id));
    cases.push(case(post.clone(), DECLINE_PROMOTION, 409, Some(ADMIN), id));
    run(&router, &cases, &mut answered).await;
    // A promotion waiting to go to a unit the catalog does not have: confirming it is refused
    // (and it still waits).
    let wait = vesemir_http::store::PromotionWait {
        deployment_id: id,
        to_application: "nowhere".into(),
        to_environment: "production".into(),
        status: vesemir_http::store::PromotionStatus::WaitingConfirmation,
        created_ms: 0,
        expires_ms: i64::MAX,
        decided_by: None,
        decided_ms: None,
    };
    assert!(store.inner.record_promotion_wait(&wait).await.expect("records"));
    run(&router, &[case(post.clone(), CONFIRM_PROMOTION, 422, Some(ADMIN), id)], &mut answered).await;

    // 409 and 429 on creation: one deployment runs (slowly), one waits, the queue holds one.
    let busy = Fleet::new(1);
    busy.executor.set_latency(Duration::from_millis(500));
    let hooks_dir = tempfile::tempdir().expect("temp dir");
    let queue = TestServer::start_with(busy, |c| {
        c.limits.max_concurrent_deployments = 1;
        c.limits.max_queued_deployments = 1;
        add_hooks(hooks_dir.path(), c);
    })
    .await;
    // A finished deployment with a failed host, to retry: its server is put back first.
    queue.fleet.executor.fail_command(&vesemir_core::fake::FakeFleet::host(1), "'9.9.9'", 7);
    let mut failing = queue.fleet.body("till", "production", "payments");
    failing["version"] = json!("9.9.9");
    let failed = queue.post(PAYMENTS, &failing).await;
    assert_eq!(failed.status, StatusCode::ACCEPTED, "{}", failed.text);
    let failed = failed.json["id"].as_i64().expect("an id");
    let done = queue.wait_finished(failed).await;
    assert_eq!(done["status"], "stopped", "{done}");
    let retry_invalid = case(post.clone(), "/v1/deployments/{id}/retry", 422, Some(PAYMENTS), failed)
        .body(r#"{"variables": {"channel": "NOT-LOWER"}}"#, "application/json");
    run(&queue.router, &[retry_invalid], &mut answered).await;
    let restored =
        queue.call(Method::POST, &format!("/v1/deployments/{failed}/restore"), Some(PAYMENTS), None).await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.text);
    assert!(queue.fleet.lb.out_of_rotation().is_empty(), "{}", restored.text);

    let first = queue.post(PAYMENTS, &queue.fleet.body("shop", "production", "payments")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let first = first.json["id"].as_i64().expect("an id");
    queue.wait_for(first, "running", |d| d["status"] == "running").await;
    let waiting = queue.post(PAYMENTS, &queue.fleet.body("shop", "staging", "payments")).await;
    assert_eq!(waiting.status, StatusCode::ACCEPTED, "{}", waiting.text);
    let again = queue.fleet.body("shop", "production", "payments").to_string();
    let other = queue.fleet.body("a1", "production", "payments").to_string();
    let cases = [
        case(post.clone(), "/v1/deployments", 409, Some(PAYMENTS), 0).body(again, "application/json"),
        case(post.clone(), "/v1/deployments", 429, Some(PAYMENTS), 0).body(other, "application/json"),
        // The running one has not ended; the failed one would wait, and the queue is full.
        case(post.clone(), "/v1/deployments/{id}/retry", 409, Some(PAYMENTS), first),
        case(post.clone(), "/v1/deployments/{id}/retry", 429, Some(PAYMENTS), failed),
        // shop in production runs and its hook refuses meanwhile; a1's would wait in a full queue.
        hook_case("shop-ci", 409, r#"{"version": "1.0.1"}"#, "q-1"),
        hook_case("a1-ci", 429, r#"{"version": "1.0.1"}"#, "q-2"),
    ];
    run(&queue.router, &cases, &mut answered).await;

    // 422 on recovery: the server's configuration no longer has the request's playbook.
    let mut renamed = config(&database);
    let web = renamed.playbooks.remove("web").expect("the web playbook");
    renamed.playbooks.insert("web2".into(), web);
    for unit in &mut renamed.units {
        unit.playbooks = vec!["web2".into()];
    }
    let reopened = Server::with_store(&renamed, Arc::new(FixedPorts(fleet.ports())), store.clone())
        .await
        .expect("reopens");
    let cases = [
        case(post.clone(), "/v1/deployments/{id}/recover", 422, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments/{id}/restore", 422, Some(ADMIN), id),
    ];
    run(&reopened.router(), &cases, &mut answered).await;

    // 503 with Retry-After: every POST that would start or change something, once the server
    // has begun to stop.
    let stopping = TestServer::start(Fleet::new(1)).await;
    stopping.server.shutdown().await;
    let cases = [
        case(post.clone(), "/v1/deployments", 503, Some(PAYMENTS), id)
            .body(valid.clone(), "application/json"),
        case(post.clone(), "/v1/deployments/{id}/recover", 503, Some(PAYMENTS), id),
        case(post.clone(), "/v1/deployments/{id}/restore", 503, Some(PAYMENTS), id),
        case(post.clone(), "/v1/deployments/{id}/retry", 503, Some(PAYMENTS), id),
        case(post.clone(), ROLLBACK, 503, Some(PAYMENTS), id).at(broken_rollback),
        case(post.clone(), CONFIRM_PROMOTION, 503, Some(PAYMENTS), id),
    ];
    run(&stopping.router, &cases, &mut answered).await;

    // 429 on an event stream over the token's cap; 410 once a deployment's events are pruned.
    let limited = TestServer::start_with(Fleet::new(1), |c| {
        c.limits.max_event_streams_per_token = 0;
        c.limits.event_retention = Duration::from_secs(1);
    })
    .await;
    let ended = limited.post(PAYMENTS, &limited.fleet.body("shop", "production", "payments")).await;
    let ended = ended.json["id"].as_i64().unwrap_or_else(|| panic!("accepted: {}", ended.text));
    limited.wait_finished(ended).await;
    run(
        &limited.router,
        &[case(get.clone(), "/v1/deployments/{id}/events", 429, Some(PAYMENTS), ended)],
        &mut answered,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(
        &limited.router,
        &[case(get.clone(), "/v1/deployments/{id}/events", 410, Some(PAYMENTS), ended)],
        &mut answered,
    )
    .await;

    // 408: every bounded /v1 call, while the store answers after the request timeout.
    store.mode.store(SLOW, Ordering::SeqCst);
    let mut cases = vec![
        case(get.clone(), "/v1/deployments", 408, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments", 408, Some(PAYMENTS), id)
            .body(valid.clone(), "application/json"),
        case(get.clone(), "/v1/deployments/{id}", 408, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments/{id}/retry", 408, Some(ADMIN), id),
        case(get.clone(), HISTORY, 408, Some(ADMIN), id)
            .at("/v1/applications/shop/environments/production/history"),
        case(post.clone(), ROLLBACK, 408, Some(ADMIN), id).at(broken_rollback),
        case(post.clone(), CONFIRM_PROMOTION, 408, Some(ADMIN), id),
        case(post.clone(), DECLINE_PROMOTION, 408, Some(ADMIN), id),
        case(get.clone(), NOTIFICATIONS, 408, Some(ADMIN), id),
    ];
    cases.extend(ORDERS.map(|path| case(post.clone(), path, 408, Some(ADMIN), id)));
    cases.push(hook_case("shop-ci", 408, r#"{"version": "1.0.2"}"#, "s-1"));
    run(&router, &cases, &mut answered).await;

    // 503 with Retry-After on the /v1 calls not answered 503 above, while the database cannot
    // be reached.
    store.mode.store(UNREACHABLE, Ordering::SeqCst);
    let mut cases = vec![
        case(get.clone(), "/v1/deployments", 503, Some(ADMIN), id),
        case(get.clone(), "/v1/deployments/{id}", 503, Some(ADMIN), id),
        case(get.clone(), "/v1/deployments/{id}/events", 503, Some(ADMIN), id),
        case(get.clone(), HISTORY, 503, Some(ADMIN), id)
            .at("/v1/applications/shop/environments/production/history"),
        case(post.clone(), DECLINE_PROMOTION, 503, Some(ADMIN), id),
        case(get.clone(), NOTIFICATIONS, 503, Some(ADMIN), id),
    ];
    cases.extend(ORDERS.map(|path| case(post.clone(), path, 503, Some(ADMIN), id)));
    cases.push(hook_case("shop-ci", 503, r#"{"version": "1.0.4"}"#, "u-1"));
    run(&router, &cases, &mut answered).await;

    // 500 on every /v1 call and 503 on /readyz, while the store fails.
    store.mode.store(FAILS, Ordering::SeqCst);
    let mut cases = vec![
        case(get.clone(), "/v1/deployments", 500, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments", 500, Some(PAYMENTS), id)
            .body(fleet.body("a1", "production", "payments").to_string(), "application/json"),
        case(get.clone(), "/v1/deployments/{id}", 500, Some(ADMIN), id),
        case(get.clone(), "/v1/deployments/{id}/events", 500, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments/{id}/recover", 500, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments/{id}/restore", 500, Some(ADMIN), id),
        case(post.clone(), "/v1/deployments/{id}/retry", 500, Some(ADMIN), id),
        case(get.clone(), HISTORY, 500, Some(ADMIN), id)
            .at("/v1/applications/shop/environments/production/history"),
        case(post.clone(), ROLLBACK, 500, Some(ADMIN), id).at(broken_rollback),
        case(post.clone(), CONFIRM_PROMOTION, 500, Some(ADMIN), id),
        case(post.clone(), DECLINE_PROMOTION, 500, Some(ADMIN), id),
        case(get.clone(), NOTIFICATIONS, 500, Some(ADMIN), id),
    ];
    cases.extend(ORDERS.map(|path| case(post.clone(), path, 500, Some(ADMIN), id)));
    cases.push(hook_case("shop-ci", 500, r#"{"version": "1.0.3"}"#, "f-1"));
    run(&router, &cases, &mut answered).await;
    // /metrics on `listen` is for admin tokens only.
    let cases = [
        case(get.clone(), "/metrics", 401, None, id),
        case(get.clone(), "/metrics", 403, Some(PAYMENTS), id),
    ];
    run(&router, &cases, &mut answered).await;
    let ready = call(&router, get.clone(), "/readyz", None, None, &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text);
    answered.insert(("GET".into(), "/readyz".into(), 503));

    let doc = call(&router, get, "/openapi.json", None, None, &[]).await.json;
    let documented: BTreeSet<(String, String, u16)> = operations(&doc)
        .into_iter()
        // The VM routes have a test of their own.
        .filter(|((_, path), _)| !is_vm(path))
        .flat_map(|((method, path), statuses)| {
            statuses.into_iter().filter(|s| *s >= 400).map(move |s| (method.clone(), path.clone(), s))
        })
        .collect();
    let never: Vec<_> = documented.difference(&answered).collect();
    assert!(never.is_empty(), "documented but never answered by this test: {never:?}");
    let undocumented: Vec<_> = answered.difference(&documented).collect();
    assert!(undocumented.is_empty(), "answered but not documented: {undocumented:?}");
}

#[tokio::test]
async fn deployment_reads_are_tagged_and_answers_point_at_the_deployment() {
    let fleet = Fleet::new(2);
    fleet.executor.set_latency(Duration::from_millis(200));
    let t = TestServer::start(fleet).await;
    let accepted = t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let id = accepted.json["id"].as_i64().expect("an id");
    let path = format!("/v1/deployments/{id}");
    assert_eq!(accepted.headers["location"], path.as_str());
    // An order's 202 names the deployment too.
    for order in ["pause", "cancel"] {
        let answer = t.call(Method::POST, &format!("{path}/{order}"), Some(PAYMENTS), None).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{order}: {}", answer.text);
        assert_eq!(answer.headers["location"], path.as_str(), "{order}");
    }
    t.wait_finished(id).await;
    let read = t.get(ADMIN, &path).await;
    let tag = read.headers["etag"].to_str().expect("an ETag").to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() > 2, "{tag}");
    // The same bytes, the same tag; a matching If-None-Match gets 304 and no body.
    assert_eq!(t.get(ADMIN, &path).await.headers["etag"], tag.as_str());
    for matching in [tag.clone(), format!("\"other\", {tag}"), format!("W/{tag}"), "*".to_owned()] {
        let unchanged = t.raw(Method::GET, &path, Some(ADMIN), None, &[("if-none-match", &matching)]).await;
        assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED, "{matching}");
        assert!(unchanged.text.is_empty());
        assert_eq!(unchanged.headers["etag"], tag.as_str());
    }
    let stale = t.raw(Method::GET, &path, Some(ADMIN), None, &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.json["id"], id);
    // An order to an ended deployment: a problem naming the call's path.
    let ended = t.call(Method::POST, &format!("{path}/cancel"), Some(ADMIN), None).await;
    assert_eq!(ended.status, StatusCode::CONFLICT);
    assert_eq!(ended.json["instance"], format!("{path}/cancel"));
    assert_eq!(ended.json["type"], "about:blank");
    assert_eq!(ended.json["title"], "Conflict");
}

#[tokio::test]
async fn the_reference_page_is_served_whole_with_no_external_asset() {
    let t = TestServer::start(Fleet::new(1)).await;
    let page = t.raw(Method::GET, "/docs", None, None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers["content-type"].to_str().expect("text").starts_with("text/html"));
    let policy = page.headers["content-security-policy"].to_str().expect("a policy");
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{policy}");
    assert!(page.text.contains("fetch(\"/openapi.json\")"), "the page renders the served document");
    for external in ["http://", "https://", "//cdn", "<link ", " src="] {
        assert!(!page.text.contains(external), "the page refers to something outside it: {external}");
    }
}

/// Whether `path` is one of the VM routes (issue 19), checked by
/// [`each_documented_vm_error_status_is_answered_by_its_route`].
fn is_vm(path: &str) -> bool {
    path.starts_with("/v1/vms") || path.starts_with("/v1/vm-flavors")
}

const VMS: &str = "/v1/vms";
const VM_FLAVORS: &str = "/v1/vm-flavors";
const VM: &str = "/v1/vms/{name}";
const VM_EVENTS: &str = "/v1/vms/{name}/events";
const VM_CANCEL: &str = "/v1/vms/{name}/cancel";

/// The `[ldap]` section for `slapd`, its service password in `password_file`.
fn vm_directory(
    slapd: &vesemir_testkit::slapd::Slapd,
    password_file: &std::path::Path,
) -> vesemir_http::web::LdapConfig {
    use vesemir_testkit::slapd::Slapd;
    let text = format!(
        "url = \"{}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\nuser_base = \"{}\"\ngroup_base = \"{}\"\ntimeout = \"2s\"\n[[groups]]\ngroup = \"everyone\"\nteams = [\"payments\"]\nroles = [\"read\"]\n",
        slapd.url(),
        Slapd::SERVICE_DN,
        password_file.display(),
        Slapd::PEOPLE,
        Slapd::GROUPS
    );
    toml::from_str(&text).expect("a valid [ldap] section")
}

/// Polls VM `path` on `router` until its status is `status`, for at most 20 s.
async fn wait_vm(router: &axum::Router, path: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = call(router, Method::GET, path, Some(ADMIN), None, &[]).await;
        if reply.json["status"] == status {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} never got {status}: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_documented_vm_error_status_is_answered_by_its_route() {
    use vesemir_testkit::slapd::{Slapd, SlapdUser};
    let mut answered = BTreeSet::new();
    let slapd = tokio::task::spawn_blocking(|| {
        Slapd::start(&[
            SlapdUser::new("alice", "pw", &["everyone"]),
            SlapdUser::new("bob", "pw", &["everyone"]),
        ])
    })
    .await
    .expect("starts");
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), Slapd::SERVICE_PASSWORD).expect("writes");
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("v.db");
    let mut settings = config(&database);
    settings.limits.request_timeout = Duration::from_secs(1);
    settings.limits.max_body_bytes = 4096;
    settings.limits.max_event_streams_per_token = 0;
    settings.tokens.push(vesemir_http::TokenConfig {
        roles: vec![vesemir_http::Role::Read],
        ..token("payments-reader", READER, Some("payments"))
    });
    settings.ldap = Some(vm_directory(&slapd, secret.path()));
    settings.vms = Some(vesemir_http::VmRules {
        max_per_owner: 1,
        allow: vec![vesemir_http::VmAllow {
            team: "payments".into(),
            flavors: vec!["small".into()],
            max_per_owner: None,
        }],
    });
    let store = Arc::new(Switch {
        inner: SqliteStore::open(&database).await.expect("opens"),
        mode: AtomicU8::new(WORKS),
    });
    let world = Arc::new(provision_fakes::World::default());
    let factory = provision_fakes::VmPorts::new(
        Fleet::new(1).ports(),
        provision_fakes::provisioning(&world, Duration::from_secs(20)),
    );
    let server = Server::with_store(&settings, Arc::new(factory), store.clone()).await.expect("opens");
    let router = server.router();
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    let body = |owner: &str| json!({ "owner": owner, "flavor": "small" }).to_string();

    // alice-1 is ready; bob-1 failed (Chef refused it): nothing to destroy.
    let created = call(&router, post.clone(), VMS, Some(PAYMENTS), Some(&body("alice")), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.text);
    wait_vm(&router, "/v1/vms/alice-1", "ready").await;
    world.fail(Some(provision_fakes::Fail::Chef));
    let failing = call(&router, post.clone(), VMS, Some(PAYMENTS), Some(&body("bob")), &[]).await;
    assert_eq!(failing.status, StatusCode::ACCEPTED, "{}", failing.text);
    wait_vm(&router, "/v1/vms/bob-1", "failed").await;
    world.fail(None);

    let (alice, bob) = ("/v1/vms/alice-1", "/v1/vms/bob-1");
    let events = "/v1/vms/alice-1/events";
    let cancel = "/v1/vms/alice-1/cancel";
    let vm_case =
        |method: &Method, path: &'static str, status: u16, token: Option<&'static str>, at: &str| {
            case(method.clone(), path, status, token, 0).at(at)
        };
    let mut cases = vec![
        vm_case(&post, VMS, 400, Some(PAYMENTS), VMS).body("{", "application/json"),
        vm_case(&post, VMS, 401, None, VMS).body(body("alice"), "application/json"),
        vm_case(&post, VMS, 403, Some(SEARCH), VMS).body(body("alice"), "application/json"),
        // alice holds one VM, the most allowed.
        vm_case(&post, VMS, 409, Some(PAYMENTS), VMS).body(body("alice"), "application/json"),
        vm_case(&post, VMS, 413, Some(PAYMENTS), VMS)
            .body(format!("{{\"owner\": \"{}\"}}", "a".repeat(5000)), "application/json"),
        vm_case(&post, VMS, 415, Some(PAYMENTS), VMS).body(body("alice"), "text/plain"),
        vm_case(&post, VMS, 422, Some(PAYMENTS), VMS)
            .body(json!({ "owner": "bob", "flavor": "huge" }).to_string(), "application/json"),
        vm_case(&get, VMS, 400, Some(ADMIN), "/v1/vms?status=nope"),
        vm_case(&get, VMS, 401, None, VMS),
        vm_case(&get, VMS, 403, Some(SEARCH), "/v1/vms?team=payments"),
        vm_case(&get, VM_FLAVORS, 401, None, VM_FLAVORS),
        vm_case(&get, VM, 401, None, alice),
        vm_case(&get, VM, 404, Some(SEARCH), alice),
        vm_case(&get, VM, 404, Some(ADMIN), "/v1/vms/nope"),
        vm_case(&get, VM_EVENTS, 400, Some(ADMIN), events).header("last-event-id", "x"),
        vm_case(&get, VM_EVENTS, 401, None, events),
        vm_case(&get, VM_EVENTS, 404, Some(SEARCH), events),
        // The cap of event streams per token is 0 here.
        vm_case(&get, VM_EVENTS, 429, Some(PAYMENTS), events),
        vm_case(&post, VM_CANCEL, 401, None, cancel),
        vm_case(&post, VM_CANCEL, 403, Some(READER), cancel),
        vm_case(&post, VM_CANCEL, 404, Some(SEARCH), cancel),
        // Ready: no create to cancel.
        vm_case(&post, VM_CANCEL, 409, Some(PAYMENTS), cancel),
        vm_case(&delete, VM, 401, None, alice),
        vm_case(&delete, VM, 403, Some(READER), alice),
        vm_case(&delete, VM, 404, Some(SEARCH), alice),
        // Failed: nothing built to take down.
        vm_case(&delete, VM, 409, Some(PAYMENTS), bob),
    ];

    // Every VM route answers 404 on a server without [vms].
    let plain = TestServer::start(Fleet::new(1)).await;
    let unconfigured = [
        vm_case(&post, VMS, 404, Some(PAYMENTS), VMS).body(body("alice"), "application/json"),
        vm_case(&get, VMS, 404, Some(ADMIN), VMS),
        vm_case(&get, VM_FLAVORS, 404, Some(ADMIN), VM_FLAVORS),
        vm_case(&get, VM, 404, Some(ADMIN), alice),
        vm_case(&get, VM_EVENTS, 404, Some(ADMIN), events),
        vm_case(&post, VM_CANCEL, 404, Some(ADMIN), cancel),
        vm_case(&delete, VM, 404, Some(ADMIN), alice),
    ];
    run(&plain.router, &unconfigured, &mut answered).await;
    run(&router, &cases, &mut answered).await;

    // 408, 503 and 500 while the database answers late, cannot be reached, fails.
    for (mode, status) in [(SLOW, 408), (UNREACHABLE, 503), (FAILS, 500)] {
        store.mode.store(mode, Ordering::SeqCst);
        cases = vec![
            vm_case(&post, VMS, status, Some(PAYMENTS), VMS).body(body("bob"), "application/json"),
            vm_case(&get, VMS, status, Some(ADMIN), VMS),
            vm_case(&get, VM, status, Some(ADMIN), alice),
            vm_case(&post, VM_CANCEL, status, Some(PAYMENTS), cancel),
            vm_case(&delete, VM, status, Some(PAYMENTS), alice),
        ];
        if status != 408 {
            cases.push(vm_case(&get, VM_EVENTS, status, Some(ADMIN), events));
        }
        run(&router, &cases, &mut answered).await;
    }
    store.mode.store(WORKS, Ordering::SeqCst);

    let doc = call(&router, get, "/openapi.json", None, None, &[]).await.json;
    let documented: BTreeSet<(String, String, u16)> = operations(&doc)
        .into_iter()
        .filter(|((_, path), _)| is_vm(path))
        .flat_map(|((method, path), statuses)| {
            statuses.into_iter().filter(|s| *s >= 400).map(move |s| (method.clone(), path.clone(), s))
        })
        .collect();
    let never: Vec<_> = documented.difference(&answered).collect();
    assert!(never.is_empty(), "documented but never answered by this test: {never:?}");
    let undocumented: Vec<_> = answered.difference(&documented).collect();
    assert!(undocumented.is_empty(), "answered but not documented: {undocumented:?}");
}
