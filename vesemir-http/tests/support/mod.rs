//! Shared helpers of the server's tests: a fleet of fake ports, a server on a temp SQLite file,
//! and small HTTP helpers over `tower::ServiceExt::oneshot`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use vesemir_core::fake::FakeFleet;
use vesemir_core::ports::LbEndpoint;
use vesemir_http::auth::sha256_hex;
use vesemir_http::{FixedPorts, Server, ServerConfig, TokenConfig};

pub const PAYMENTS: &str = "tok-payments-0123456789";
pub const SEARCH: &str = "tok-search-0123456789";
pub const ADMIN: &str = "tok-admin-0123456789";

/// Fakes behind `n` hosts `web-01`... with servers of the same names.
#[derive(Clone)]
pub struct Fleet(pub FakeFleet);

impl std::ops::Deref for Fleet {
    type Target = FakeFleet;
    fn deref(&self) -> &FakeFleet {
        &self.0
    }
}

impl Fleet {
    pub fn new(size: usize) -> Self {
        Self(FakeFleet::new(size, vec![LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 }]))
    }

    /// A request body for the whole fleet.
    pub fn body(&self, application: &str, environment: &str, team: &str) -> Value {
        let hosts: Vec<Value> = (1..=self.size)
            .map(|i| json!({ "name": FakeFleet::host(i), "address": FakeFleet::address(i) }))
            .collect();
        json!({
            "application": application,
            "environment": environment,
            "team": team,
            "version": "2.0.0",
            "targets": { "hosts": hosts },
            "load_balancer": {
                "backend": "be_web",
                "instances": [{ "address": "127.0.0.1", "port": 9001 }]
            },
            "strategy": { "concurrency": 1 },
            "playbook": "web",
            "variables": { "channel": "stable" }
        })
    }
}

pub fn token(name: &str, token: &str, team: Option<&str>) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: sha256_hex(token.as_bytes()),
        team: team.map(Into::into),
        admin: team.is_none(),
    }
}

/// A configuration on `database` with three tokens and the `web` playbook.
pub fn config(database: &Path) -> ServerConfig {
    let text = r#"
database = "unused"
[applications]
ledger = "payments"
[playbooks.web]
steps = [{ name = "install", run = "install-app {application} {version} {channel}", timeout = "1m" }]
[playbooks.web.health]
command = "check-app"
timeout = "10s"
interval = "1s"
"#;
    let mut config = ServerConfig::from_toml(text).expect("valid config");
    config.database = database.into();
    config.tokens = vec![
        token("payments-ci", PAYMENTS, Some("payments")),
        token("search-ci", SEARCH, Some("search")),
        token("root", ADMIN, None),
    ];
    config
}

/// A server over a fleet, on a temp SQLite file.
pub struct TestServer {
    pub server: Server,
    pub router: Router,
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(fleet: Fleet) -> Self {
        Self::start_with(fleet, |_| {}).await
    }

    pub async fn start_with(fleet: Fleet, change: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = config(&dir.path().join("vesemir.db"));
        change(&mut config);
        let server = Server::open(&config, Arc::new(FixedPorts(fleet.ports()))).await.expect("server opens");
        let router = server.router();
        Self { server, router, fleet, dir }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, token, body.as_deref(), &[]).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        call(&self.router, method, path, token, body, headers).await
    }

    pub async fn post(&self, token: &str, body: &Value) -> Reply {
        self.call(Method::POST, "/v1/deployments", Some(token), Some(body)).await
    }

    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Polls a deployment until `done` holds of it, for at most 20 s.
    pub async fn wait_for(&self, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.get(ADMIN, &format!("/v1/deployments/{id}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
            if done(&reply.json) {
                return reply.json;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deployment {id} never got {what}: {}",
                reply.json
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until deployment `id` has ended.
    pub async fn wait_finished(&self, id: i64) -> Value {
        self.wait_for(id, "finished", |d| !matches!(d["status"].as_str(), Some("queued" | "running"))).await
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

pub async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body.unwrap_or_default().to_owned())).expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
        .await
        .expect("body within 30 s")
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, text, json }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

pub fn parse_sse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some(Sse { id: id?, event, data: serde_json::from_str(&data).ok()? })
        })
        .collect()
}

pub fn id_of(reply: &Reply) -> i64 {
    reply.json["id"].as_i64().unwrap_or_else(|| panic!("no id in {} {}", reply.status, reply.text))
}
