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
use vesemir_core::static_inventory::StaticHost;
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
        Self::from(FakeFleet::new(size, vec![LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 }]))
    }

    /// A fleet whose inventory holds its hosts, tagged `web` in the Chef environment `fleet`
    /// (what the test catalog's units search for).
    pub fn from(fleet: FakeFleet) -> Self {
        for i in 1..=fleet.size {
            let host = vesemir_core::Host::new(FakeFleet::host(i), FakeFleet::address(i)).expect("address");
            let fleet_env = vesemir_core::name::EnvironmentName::new("fleet").expect("valid");
            fleet.inventory.add(StaticHost::tagged(host, &["web"]).in_environment(fleet_env));
        }
        Self(fleet)
    }

    /// A request body for a unit of the test catalog (the whole fleet).
    pub fn body(&self, application: &str, environment: &str, team: &str) -> Value {
        json!({
            "application": application,
            "environment": environment,
            "team": team,
            "version": "2.0.0",
            "strategy": { "concurrency": 1 },
            "playbook": "web",
            "variables": { "channel": "stable" }
        })
    }
}

/// The test catalog's units: (team, application, environment, extra load balancer settings).
pub const UNITS: [(&str, &str, &str, &str); 11] = [
    ("payments", "shop", "production", ""),
    ("payments", "shop", "staging", ""),
    ("payments", "ledger", "production", ""),
    ("payments", "cart", "production", ", servers_not_in_rotation = \"include\""),
    ("payments", "skipper", "production", ", servers_not_in_rotation = \"skip\""),
    ("payments", "till", "production", ""),
    ("payments", "a1", "production", ""),
    ("payments", "a2", "production", ""),
    ("payments", "a3", "production", ""),
    ("payments", "broken", "production", ""),
    ("search", "finder", "production", ""),
];

/// The catalog's `[[units]]` for [`UNITS`], each over the fleet's hosts (tag `web`, Chef
/// environment `fleet`) behind `be_web` (`broken`: `be_missing`).
pub fn units_toml() -> String {
    let mut text = String::new();
    for (team, application, environment, extra) in UNITS {
        let backend = if application == "broken" { "be_missing" } else { "be_web" };
        text.push_str(&format!(
            r#"
[[units]]
team = "{team}"
application = "{application}"
environment = "{environment}"
playbooks = ["web"]
targets = {{ tags = ["web"], chef_environment = "fleet" }}
load_balancer = {{ backend = "{backend}", instances = [{{ address = "127.0.0.1", port = 9001 }}]{extra} }}
strategy = {{ max_concurrency = 10, canary = true, ramp = true }}
variables.channel = {{ pattern = "^[a-z]+$", default = "stable" }}
"#
        ));
    }
    text
}

pub fn token(name: &str, token: &str, team: Option<&str>) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: sha256_hex(token.as_bytes()),
        team: team.map(Into::into),
        teams: Vec::new(),
        roles: Vec::new(),
        admin: team.is_none(),
    }
}

/// A configuration on `database` with three tokens, the `web` playbook and the units of
/// [`UNITS`].
pub fn config(database: &Path) -> ServerConfig {
    let text = format!("database = \"unused\"\n{}{PLAYBOOK}", units_toml());
    let mut config = ServerConfig::from_toml(&text).expect("valid config");
    config.database = database.into();
    config.tokens = vec![
        token("payments-ci", PAYMENTS, Some("payments")),
        token("search-ci", SEARCH, Some("search")),
        token("root", ADMIN, None),
    ];
    config
}

/// The `web` playbook of the test configuration.
pub const PLAYBOOK: &str = r#"
[playbooks.web]
steps = [{ name = "install", run = "install-app {application} {version} {channel}", timeout = "1m" }]
[playbooks.web.health]
command = "check-app"
timeout = "10s"
interval = "1s"
"#;

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

/// A server listening on a real loopback socket, stopped when `stop` is sent.
pub struct Loopback {
    pub address: std::net::SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub serving: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Loopback {
    /// Serves `server` on a free loopback port.
    pub async fn serve(server: &vesemir_http::Server) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = server.clone();
        let serving = tokio::spawn(async move {
            server
                .serve_on(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Self { address, stop: Some(stop), serving }
    }

    /// One HTTP/1.1 exchange over a fresh connection.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
        let authorization: Vec<(&str, String)> =
            token.map(|token| ("Authorization", format!("Bearer {token}"))).into_iter().collect();
        self.call_with_headers(method, path, &authorization, body).await
    }

    /// One HTTP/1.1 exchange over a fresh connection, with `headers`.
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&str>,
    ) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or("");
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let mut stream = tokio::net::TcpStream::connect(self.address).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("writes");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
            .await
            .expect("answer within 20 s")
            .expect("reads");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, text) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or_else(|| panic!("no status line in {answer}"));
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
                    axum::http::HeaderValue::from_str(value.trim()),
                ) {
                    headers.append(name, value);
                }
            }
        }
        // Chunked bodies (event streams) are kept as they are; JSON answers have a length.
        let text = text.to_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, json }
    }

    /// Stops it: the server's own shutdown runs.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = tokio::time::timeout(Duration::from_secs(60), self.serving).await.expect("stops");
        served.expect("task").expect("served");
    }
}

/// Where browser tests put screenshots: `target/browser-artifacts/` of the workspace (CI keeps
/// the folder).
pub fn browser_artifacts() -> std::path::PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser-artifacts")
}
