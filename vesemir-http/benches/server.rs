//! The server's benchmark, in process (requests through `tower::ServiceExt::oneshot`, no
//! sockets) over fake ports and a real SQLite file: accepted deployments per second, status
//! reads per second with p50/p99 latency, and SSE fan-out to 100 followers. The same accepted
//! and reads figures again with three instances on one real PostgreSQL (a cluster the bench
//! starts), the clients spread over them.
//!
//! Run with `cargo bench -p vesemir-http`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use vesemir_core::fake::{FakeExecutor, FakeInventory, FakeLoadBalancer, FakeServer};
use vesemir_core::name::ServerName;
use vesemir_core::ports::LbEndpoint;
use vesemir_core::request::{DeploymentRequest, Targets};
use vesemir_core::Ports;
use vesemir_http::auth::sha256_hex;
use vesemir_http::{Database, PortsError, PortsFactory, PostgresUrl, Server, ServerConfig, TokenConfig};

const TOKEN: &str = "bench-token-0123456789abcdef";
const CLIENTS: usize = 8;

/// Fresh fakes for every deployment: each application has its own servers, as in a real
/// fleet (deployments of different applications never share servers here).
struct Fakes {
    latency: Duration,
}

impl PortsFactory for Fakes {
    fn ports(&self, request: &DeploymentRequest) -> Result<Ports, PortsError> {
        let Targets::Hosts(hosts) = &request.targets else {
            return Err(PortsError::Unsupported { reason: "the benchmark lists its hosts".into() });
        };
        let servers = hosts
            .iter()
            .map(|h| FakeServer::new(ServerName::new(h.name.as_str()).expect("valid"), h.address.clone()))
            .collect();
        let instances = vec![LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 }];
        let executor = FakeExecutor::new();
        executor.set_latency(self.latency);
        Ok(Ports {
            inventory: Arc::new(FakeInventory::new()),
            load_balancer: Arc::new(FakeLoadBalancer::new(
                request.load_balancer.backend.clone(),
                instances,
                servers,
            )),
            executor: Arc::new(executor),
        })
    }
}

struct Fleet {
    size: usize,
    latency: Duration,
}

impl Fleet {
    fn new(size: usize, latency: Duration) -> Self {
        Self { size, latency }
    }

    fn body(&self, application: &str, concurrency: usize) -> String {
        json!({
            "application": application,
            "environment": "production",
            "team": "bench",
            "version": "1.0.0",
            "strategy": { "concurrency": concurrency },
            "playbook": "web"
        })
        .to_string()
    }

    /// The catalog's units: every application the bench deploys, over this fleet's hosts.
    fn units(&self) -> String {
        let hosts: Vec<String> = (1..=self.size)
            .map(|i| format!("{{ name = \"web-{i:03}\", address = \"10.0.{}.{}\" }}", i / 250, i % 250))
            .collect();
        let hosts = hosts.join(", ");
        let apps = (0..CLIENTS)
            .flat_map(|c| (0..2000 / CLIENTS).map(move |i| format!("app-{c}-{i}")))
            .chain(["fanout".to_owned()]);
        apps.map(|app| {
            format!(
                "[[units]]\nteam = \"bench\"\napplication = \"{app}\"\nenvironment = \"production\"\nplaybooks = [\"web\"]\n\
                 targets = {{ hosts = [{hosts}] }}\n\
                 load_balancer = {{ backend = \"be_web\", instances = [{{ address = \"127.0.0.1\", port = 9001 }}] }}\n\
                 strategy = {{ max_concurrency = 5 }}\n"
            )
        })
        .collect()
    }
}

async fn server(fleet: &Fleet, dir: &std::path::Path) -> (Server, Router) {
    server_on(fleet, dir.join("bench.db").into(), "bench").await
}

async fn server_on(fleet: &Fleet, database: Database, instance: &str) -> (Server, Router) {
    let text = format!(
        "{}{}",
        r#"
database = "unused"
[limits]
max_concurrent_deployments = 64
max_queued_deployments = 1000000
[playbooks.web]
steps = [{ name = "install", run = "install {version}" }]
[playbooks.web.health]
command = "check"
"#,
        fleet.units()
    );
    let mut config = ServerConfig::from_toml(&text).expect("valid");
    config.database = database;
    config.cluster.instance = Some(instance.into());
    config.tokens = vec![TokenConfig {
        name: "bench".into(),
        sha256: sha256_hex(TOKEN.as_bytes()),
        team: None,
        teams: Vec::new(),
        roles: Vec::new(),
        admin: true,
    }];
    let server = Server::open(&config, Arc::new(Fakes { latency: fleet.latency })).await.expect("opens");
    let router = server.router();
    (server, router)
}

async fn send(router: &Router, method: &str, path: &str, body: Option<String>) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.unwrap_or_default()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, bytes)
}

/// Deployments that succeeded, from the metrics.
async fn succeeded(router: &Router) -> usize {
    let (_, text) = send(router, "GET", "/metrics", None).await;
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with("vesemir_deployments_total{") && l.contains("outcome=\"succeeded\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

async fn wait_idle(server: &Server, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut last_report = Instant::now();
    while server.active_deployments() > 0 {
        if std::env::var_os("BENCH_DEBUG").is_some() && last_report.elapsed() > Duration::from_secs(1) {
            eprintln!("  {} deployments still active", server.active_deployments());
            last_report = Instant::now();
        }
        assert!(start.elapsed() < bound, "deployments still running after {bound:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn accepted_and_reads_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::new(2, Duration::ZERO);
    let instance = server(&fleet, dir.path()).await;
    accepted_and_reads("SQLite, 1 instance", &fleet, &[instance]).await;
}

async fn accepted_and_reads_on_postgres() {
    let cluster =
        tokio::task::spawn_blocking(vesemir_testkit::postgres::Postgres::start).await.expect("starts");
    let url = PostgresUrl::parse(&cluster.database()).expect("a URL");
    let fleet = Fleet::new(2, Duration::ZERO);
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        instances.push(server_on(&fleet, Database::Postgres(url.clone()), name).await);
    }
    accepted_and_reads("PostgreSQL, 3 instances", &fleet, &instances).await;
}

/// 2000 deployments from 8 clients, client `i` on instance `i % n`; then 20,000 status reads
/// the same way.
async fn accepted_and_reads(label: &str, fleet: &Fleet, instances: &[(Server, Router)]) {
    let total = 2000;
    let per_client = total / CLIENTS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let router = instances[client % instances.len()].1.clone();
        let bodies: Vec<String> =
            (0..per_client).map(|i| fleet.body(&format!("app-{client}-{i}"), 1)).collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut ids = Vec::new();
            for body in bodies {
                let t = Instant::now();
                let (status, bytes) = send(&router, "POST", "/v1/deployments", Some(body)).await;
                latencies.push(t.elapsed());
                assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&bytes));
                let v: Value = serde_json::from_slice(&bytes).expect("json");
                ids.push(v["id"].as_i64().expect("id"));
            }
            (latencies, ids)
        }));
    }
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    for task in tasks {
        let (l, i) = task.await.expect("client");
        latencies.extend(l);
        ids.extend(i);
    }
    let accepted_in = start.elapsed();
    let mut drained = Duration::ZERO;
    for (server, _) in instances {
        drained += wait_idle(server, Duration::from_secs(300)).await;
    }
    let all_done = start.elapsed();
    let mut done = 0;
    for (_, router) in instances {
        done += succeeded(router).await;
    }
    assert_eq!(done, ids.len(), "every deployment succeeded");
    latencies.sort();
    println!(
        "[{label}] POST /v1/deployments: {} accepted in {:.2?} = {:.0}/s ({CLIENTS} clients; p50 {:.2?}, p99 {:.2?}); \
         all {} ran to the end (2 fake hosts each) {:.2?} later = {:.0} deployments/s end to end",
        ids.len(),
        accepted_in,
        rate(ids.len(), accepted_in),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        ids.len(),
        drained,
        rate(ids.len(), all_done),
    );

    let reads = 20_000;
    let per_client = reads / CLIENTS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let router = instances[client % instances.len()].1.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let id = ids[(i * 7919 + client * 104_729) % ids.len()];
                let t = Instant::now();
                let (status, _) = send(&router, "GET", &format!("/v1/deployments/{id}"), None).await;
                latencies.push(t.elapsed());
                assert_eq!(status, StatusCode::OK);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "[{label}] GET /v1/deployments/{{id}}: {} reads in {:.2?} = {:.0}/s ({CLIENTS} clients; p50 {:.2?}, p99 {:.2?})",
        latencies.len(),
        elapsed,
        rate(latencies.len(), elapsed),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
}

async fn sse_fan_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::new(50, Duration::from_millis(5));
    let (server, router) = server(&fleet, dir.path()).await;
    let followers = 100;
    let start = Instant::now();
    let (status, bytes) = send(&router, "POST", "/v1/deployments", Some(fleet.body("fanout", 5))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = serde_json::from_slice::<Value>(&bytes).expect("json")["id"].as_i64().expect("id");
    let mut tasks = Vec::new();
    for _ in 0..followers {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            let (status, bytes) = send(&router, "GET", &format!("/v1/deployments/{id}/events"), None).await;
            assert_eq!(status, StatusCode::OK);
            let done = Instant::now();
            let text = String::from_utf8(bytes).expect("utf-8");
            let seqs: Vec<u64> = text
                .lines()
                .filter_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse().expect("seq"))
                .collect();
            (seqs, done)
        }));
    }
    let mut counts = Vec::new();
    let mut last_done = start;
    for task in tasks {
        let (seqs, done) = task.await.expect("follower");
        let n = seqs.len() as u64;
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "every follower gets every event once, in order");
        counts.push(seqs.len());
        last_done = last_done.max(done);
    }
    wait_idle(&server, Duration::from_secs(60)).await;
    let elapsed = last_done - start;
    let events = counts[0];
    assert!(counts.iter().all(|&c| c == events), "followers saw different counts: {counts:?}");
    println!(
        "SSE fan-out: {followers} followers of one deployment (50 fake hosts, 5 at a time, 5 ms per command) \
         each got all {events} events in order; {} events delivered in {:.2?} = {:.0} events/s",
        events * followers,
        elapsed,
        rate(events * followers, elapsed),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        accepted_and_reads_on_sqlite().await;
        accepted_and_reads_on_postgres().await;
        sse_fan_out().await;
    });
}
