//! Several servers on one PostgreSQL database (a real cluster this test starts), in one test
//! process over one fake fleet: admission across instances, a cancel through another
//! instance, an instance that dies mid-rollout (another takes its deployment over once its
//! lease expires: resumes it, or restores it, keeping what the rollout had used up or passed:
//! its failures, its canary's confirmation, a pause), fencing (an instance whose lease was
//! taken, or that lost the database, stops acting before another drives its hosts), and reads
//! on an instance whose database stalls (503 within a bound).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use serde_json::Value;
use support::{call, config, parse_sse, Fleet, Sse, ADMIN, PAYMENTS};
use vesemir_http::{Database, FixedPorts, PostgresUrl, Server, ServerConfig};
use vesemir_testkit::postgres::Postgres;

const LEASE: Duration = Duration::from_secs(1);

fn pg_config(url: &str, instance: &str) -> ServerConfig {
    let mut config = config(std::path::Path::new("unused.db"));
    config.database = Database::Postgres(PostgresUrl::parse(url).unwrap());
    config.cluster.instance = Some(instance.into());
    config.cluster.lease = LEASE;
    config
}

async fn open(url: &str, instance: &str, fleet: &Fleet) -> (Server, Router) {
    let server = Server::open(&pg_config(url, instance), Arc::new(FixedPorts(fleet.ports()))).await.unwrap();
    let router = server.router();
    (server, router)
}

async fn get(router: &Router, id: i64) -> Value {
    let reply = call(router, Method::GET, &format!("/v1/deployments/{id}"), Some(ADMIN), None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json
}

/// Polls deployment `id` through `router` until `done` holds, for at most 20 s.
async fn wait_for(router: &Router, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = get(router, id).await;
        if done(&d) {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "deployment {id} never got {what}: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn in_steps(d: &Value, host: usize) -> bool {
    d["hosts"][host]["phase"].as_str().is_some_and(|p| p.starts_with("step"))
}

fn post_body(body: &Value) -> String {
    body.to_string()
}

async fn post(router: &Router, body: &Value) -> (StatusCode, Value) {
    let body = post_body(body);
    let reply = call(router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &[]).await;
    (reply.status, reply.json)
}

fn start_cluster() -> Postgres {
    Postgres::start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_admissions_over_three_instances_admit_exactly_one_and_a_cancel_reaches_the_runner() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(1));
    let mut routers = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let (server, router) = open(&url, name, &fleet).await;
        servers.push(server);
        routers.push(router);
    }
    let body = fleet.body("shop", "production", "payments");
    let replies = futures_util::future::join_all((0..50).map(|i| post(&routers[i % 3], &body))).await;
    let admitted: Vec<i64> = replies
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, j)| j["id"].as_i64().unwrap())
        .collect();
    let conflicts = replies.iter().filter(|(s, _)| *s == StatusCode::CONFLICT).count();
    assert_eq!(admitted.len(), 1, "{replies:?}");
    assert_eq!(conflicts, 49, "{replies:?}");
    let id = admitted[0];
    let running_on = servers.iter().position(|s| s.active_deployments() == 1).expect("one instance runs it");
    assert_eq!(servers.iter().map(Server::active_deployments).sum::<usize>(), 1);

    // A cancel through another instance reaches the one running it (at its next renewal).
    let other = &routers[(running_on + 1) % 3];
    let cancel =
        call(other, Method::POST, &format!("/v1/deployments/{id}/cancel"), Some(ADMIN), None, &[]).await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.text);
    let d = wait_for(other, id, "cancelled", |d| d["status"] == "cancelled").await;
    assert!(d["hosts"].as_array().unwrap().iter().any(|h| h["outcome"] == "cancelled"), "{d}");
    assert!(fleet.lb.out_of_rotation().is_empty(), "every server back");

    // The unit is free again, for any instance.
    let (status, again) = post(&routers[(running_on + 2) % 3], &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
}

/// Starts instance `name` on `url` in its own runtime, starts a deployment of `body` and kills
/// the instance (its runtime dies) once the first host is in its steps. Returns the id.
fn start_and_kill(url: &str, name: &str, fleet: &Fleet, body: &Value) -> i64 {
    let body = body.clone();
    run_and_kill(url, name, fleet, move |router| async move {
        let (status, reply) = post(&router, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        let id = reply["id"].as_i64().unwrap();
        wait_for(&router, id, "its first host in its steps", |d| in_steps(d, 0)).await;
        id
    })
}

/// Starts instance `name` on `url` in its own runtime, runs `script` against its router, then
/// kills the instance (its runtime dies). Returns what `script` returned.
fn run_and_kill<T, F, Fut>(url: &str, name: &str, fleet: &Fleet, script: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Router) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (url, name, fleet) = (url.to_owned(), name.to_owned(), fleet.clone());
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let out = runtime.block_on(async {
            let (_server, router) = open(&url, &name, &fleet).await;
            script(router).await
        });
        runtime.shutdown_timeout(Duration::from_millis(100));
        out
    })
    .join()
    .unwrap()
}

/// Every event of deployment `id`, through `router`'s stream (it ends with the deployment).
async fn events(router: &Router, id: i64) -> Vec<Sse> {
    let path = format!("/v1/deployments/{id}/events");
    let stream = call(router, Method::GET, &path, Some(ADMIN), None, &[]).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.text);
    parse_sse(&stream.text)
}

/// Polls the database until deployment `id`'s lease epoch is `epoch` (taken over), for at
/// most 20 s; returns when it saw it.
async fn wait_for_epoch(url: &str, id: i64, epoch: i64) -> tokio::time::Instant {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now: i64 = sqlx::query_scalar("SELECT lease_epoch FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if now == epoch {
            return tokio::time::Instant::now();
        }
        assert!(tokio::time::Instant::now() < deadline, "deployment {id} never got lease epoch {epoch}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_instance_dies_mid_rollout_another_takes_it_over_and_resumes_it() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(50));
    let (_b, router) = open(&url, "instance-b", &fleet).await;
    let body = fleet.body("shop", "production", "payments");
    let id = start_and_kill(&url, "instance-a", &fleet, &body);
    let killed = tokio::time::Instant::now();
    assert_eq!(fleet.lb.out_of_rotation().len(), 1, "the first host was left drained");
    fleet.executor.set_latency(Duration::from_millis(100));
    let taken = wait_for_epoch(&url, id, 2).await.duration_since(killed);
    eprintln!("taken over {taken:?} after the kill, for a lease of {LEASE:?}");
    assert!(taken <= LEASE * 3, "taken over {taken:?} after the kill, for a lease of {LEASE:?}");

    let d = wait_for(&router, id, "succeeded", |d| d["status"] == "succeeded").await;
    let hosts = d["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3, "{d}");
    for h in hosts {
        assert_eq!(h["outcome"], "succeeded", "{d}");
        assert_eq!(h["rotation"], "in_rotation", "{d}");
    }
    assert!(fleet.lb.out_of_rotation().is_empty(), "every server back in rotation");
    assert!(fleet.lb.rotation_log().max_out_of_rotation <= 1, "never more than concurrency out");
    // web-01 was in flight: checked (health gate), put back, then deployed again in full.
    let web01 = vesemir_core::name::HostName::new("web-01").unwrap();
    let installs =
        fleet.executor.commands(&web01).iter().filter(|c| c.script.contains("install-app")).count();
    assert_eq!(installs, 2, "started by A, deployed again by B");

    // One record: the handover in its events, numbered on without gaps, from A to B.
    let events = events(&router, id).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "numbered without gaps");
    let handovers: Vec<&Sse> = events.iter().filter(|e| e.event == "handover").collect();
    assert_eq!(handovers.len(), 1, "{events:?}");
    let handover = &handovers[0].data;
    assert!(handover["from"].as_str().unwrap().starts_with("instance-a/"), "{handover}");
    assert!(handover["to"].as_str().unwrap().starts_with("instance-b/"), "{handover}");
    assert_eq!(handover["epoch"], 2, "{handover}");
    assert_eq!(handover["action"], "resume", "{handover}");
    let started = events.iter().filter(|e| e.event == "deployment_started").count();
    assert_eq!(started, 1, "the resumed rollout does not start the deployment again");
    let finished = events.last().unwrap();
    assert_eq!(finished.event, "deployment_finished");
    assert_eq!(finished.data["totals"]["succeeded"], 3, "{}", finished.data);

    // B's metrics: its own takeover, and the database's counts (every instance's).
    let metrics = call(&router, Method::GET, "/metrics", Some(ADMIN), None, &[]).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    for line in [
        "vesemir_takeovers_total 1",
        "vesemir_database_deployments{status=\"succeeded\"} 1",
        "vesemir_database_deployments{status=\"running\"} 0",
        "vesemir_instance_info{instance=\"instance-b/",
    ] {
        assert!(metrics.text.contains(line), "{line} in {}", metrics.text);
    }

    // The unit is free again.
    let (status, next) = post(&router, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the unit is free again: {next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_takeover_restore_the_other_instance_puts_back_the_host_in_flight_and_stops() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(50));
    let (_b, router) = open(&url, "instance-b", &fleet).await;
    let mut body = fleet.body("shop", "production", "payments");
    body["strategy"]["on_takeover"] = "restore".into();
    let id = start_and_kill(&url, "instance-a", &fleet, &body);
    fleet.executor.set_latency(Duration::ZERO);

    let d = wait_for(&router, id, "interrupted", |d| d["status"] == "interrupted").await;
    assert!(fleet.lb.out_of_rotation().is_empty(), "web-01 passed its gate and is back: {d}");
    assert_eq!(d["out_of_rotation"], serde_json::json!([]), "{d}");
    let error = d["error"].as_str().unwrap();
    assert!(error.contains("instance-a/") && error.contains("restore"), "{d}");
    assert_eq!(d["hosts"][0]["outcome"], "cancelled", "{d}");
    assert_eq!(d["hosts"][0]["rotation"], "in_rotation", "{d}");
    for h in &d["hosts"].as_array().unwrap()[1..] {
        assert_eq!(h["outcome"], "cancelled", "never started: {d}");
    }
    let web02 = vesemir_core::name::HostName::new("web-02").unwrap();
    assert!(fleet.executor.commands(&web02).is_empty(), "no other host started");
    let events = events(&router, id).await;
    let handover = events.iter().find(|e| e.event == "handover").expect("a handover");
    assert_eq!(handover.data["action"], "restore");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_host_in_flight_is_unhealthy_the_takeover_leaves_it_out_and_reports_it() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(50));
    let (_b, router) = open(&url, "instance-b", &fleet).await;
    let mut body = fleet.body("shop", "production", "payments");
    // The host left out keeps its slot: with 2 at once the others go on beside it.
    body["strategy"] = serde_json::json!({ "concurrency": 2, "max_failures": 1 });
    let id = start_and_kill(&url, "instance-a", &fleet, &body);
    fleet.executor.set_latency(Duration::ZERO);
    let web01 = vesemir_core::name::HostName::new("web-01").unwrap();
    fleet.executor.fail_command(&web01, "check-app", 1);

    let d = wait_for(&router, id, "ended", |d| d["status"] != "running").await;
    assert_eq!(d["status"], "completed_with_failures", "{d}");
    assert_eq!(d["hosts"][0]["outcome"], "failed", "{d}");
    assert_eq!(d["hosts"][0]["rotation"], "out_of_rotation", "{d}");
    let error = d["hosts"][0]["error"].as_str().unwrap();
    assert!(error.contains("left out of rotation on takeover"), "{d}");
    assert_eq!(d["hosts"][1]["outcome"], "succeeded", "{d}");
    assert_eq!(d["hosts"][2]["outcome"], "succeeded", "{d}");
    let out: Vec<String> = fleet.lb.out_of_rotation().iter().map(ToString::to_string).collect();
    assert_eq!(out, ["web-01"], "only the unhealthy host is out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_lease_was_taken_stops_acting_at_once() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(2));
    let (server, router) = open(&url, "instance-a", &fleet).await;
    let (status, reply) = post(&router, &fleet.body("shop", "production", "payments")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let id = reply["id"].as_i64().unwrap();
    wait_for(&router, id, "its first host in its steps", |d| in_steps(d, 0)).await;

    // Another instance takes the lease (as a takeover would): a new owner, a new epoch.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE deployments SET lease_owner = 'thief', lease_epoch = lease_epoch + 1, \
         lease_expires_ms = lease_expires_ms + 600000 WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let changes = fleet.lb.rotation_log().changes.len();
    let journal: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deployment_journal WHERE deployment_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();

    // Within a renewal it notices and stops; its steps end meanwhile, but nothing more changes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.active_deployments() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the instance kept running it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fleet.lb.rotation_log().changes.len(),
        changes,
        "a load balancer change after the lease was lost"
    );
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deployment_journal WHERE deployment_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, journal, "a journal entry was written without the lease");
    let d = get(&router, id).await;
    assert_eq!(d["status"], "running", "the record is the new holder's to end: {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_another_instance_gets_the_events_live_and_resumes_from_last_event_id() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(300));
    let (_a, router_a) = open(&url, "instance-a", &fleet).await;
    let (_b, router_b) = open(&url, "instance-b", &fleet).await;
    let (status, reply) = post(&router_a, &fleet.body("shop", "production", "payments")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let id = reply["id"].as_i64().unwrap();
    wait_for(&router_b, id, "a few events", |d| in_steps(d, 0)).await;

    // Followed on B from event 2 on, while A runs it: the stream ends with the deployment.
    let started = tokio::time::Instant::now();
    let path = format!("/v1/deployments/{id}/events");
    let stream = call(&router_b, Method::GET, &path, Some(ADMIN), None, &[("last-event-id", "2")]).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.text);
    let seqs: Vec<u64> = stream
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    let last = *seqs.last().unwrap();
    assert_eq!(seqs, (3..=last).collect::<Vec<_>>(), "every event after 2, once, in order");
    assert!(stream.text.contains("event: deployment_finished"), "{}", stream.text);
    let d = get(&router_b, id).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    // It ran for a while after the follow began: those events came live, not from a replay.
    assert!(started.elapsed() > Duration::from_millis(600), "{:?}", started.elapsed());
}

/// A TCP proxy to `target` on a free loopback port; `cut` closes every connection and stops
/// accepting (a network split between an instance and the database); `stall` keeps every
/// connection open and accepts new ones, but forwards nothing more (a split that drops packets:
/// nothing is refused, nothing answers).
struct Proxy {
    port: u16,
    tasks: tokio::task::JoinSet<()>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let connections = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let held = connections.clone();
        let stall = stalled.clone();
        tasks.spawn(async move {
            let _held = held;
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let stall = stall.clone();
                connections.lock().unwrap().spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, stall.clone()),
                            pump(server_read, client_write, stall)
                        );
                    }
                });
            }
        });
        Self { port, tasks, stalled }
    }

    /// Stops accepting and drops every connection (the connection tasks go with the acceptor).
    fn cut(&mut self) {
        self.tasks.abort_all();
    }

    /// Forwards nothing more, in either direction, on any connection; drops none.
    fn stall(&self) {
        self.stalled.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes; bytes read while `stalled` are held, never sent.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// One command on one host: host, script, start, end.
type Run = (String, String, std::time::Instant, Option<std::time::Instant>);

/// The fleet's executor, recording when each command ran on each host, to tell whether two
/// instances ever drove one host at once (host-side evidence, not the store's).
#[derive(Debug, Clone)]
struct Recorded {
    inner: vesemir_core::fake::FakeExecutor,
    runs: Arc<std::sync::Mutex<Vec<Run>>>,
}

/// Marks its run ended when dropped (a command whose rollout was aborted ends there too).
struct RunGuard<'a>(&'a Recorded, usize);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.runs.lock().unwrap()[self.1].3 = Some(std::time::Instant::now());
    }
}

#[async_trait::async_trait]
impl vesemir_core::ports::Executor for Recorded {
    async fn connect(&self, host: &vesemir_core::Host) -> Result<(), vesemir_core::PortError> {
        self.inner.connect(host).await
    }
    async fn run(
        &self,
        host: &vesemir_core::Host,
        command: &vesemir_core::ports::RemoteCommand,
        output: vesemir_core::ports::OutputSink,
    ) -> Result<vesemir_core::ports::ExitStatus, vesemir_core::PortError> {
        let index = {
            let mut runs = self.runs.lock().unwrap();
            runs.push((host.name.to_string(), command.script.clone(), std::time::Instant::now(), None));
            runs.len() - 1
        };
        let _guard = RunGuard(self, index);
        self.inner.run(host, command, output).await
    }
    async fn upload(
        &self,
        host: &vesemir_core::Host,
        upload: &vesemir_core::ports::FileUpload,
    ) -> Result<(), vesemir_core::PortError> {
        self.inner.upload(host, upload).await
    }
    async fn close(&self, host: &vesemir_core::Host) {
        self.inner.close(host).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_from_the_database_stops_before_another_takes_its_deployment_over() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let mut proxy = Proxy::start(cluster.port).await;
    let url_a = url.replace(&format!(":{}/", cluster.port), &format!(":{}/", proxy.port));
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(2));
    let recorded = Recorded { inner: fleet.executor.clone(), runs: Arc::default() };
    let ports = vesemir_core::Ports { executor: Arc::new(recorded.clone()), ..fleet.ports() };
    let open_on = |url: String, name: &'static str| {
        let ports = ports.clone();
        async move {
            let server = Server::open(&pg_config(&url, name), Arc::new(FixedPorts(ports))).await.unwrap();
            let router = server.router();
            (server, router)
        }
    };
    let (_a, router_a) = open_on(url_a, "instance-a").await;
    let (_b, router_b) = open_on(url.clone(), "instance-b").await;
    let (status, reply) = post(&router_a, &fleet.body("shop", "production", "payments")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let id = reply["id"].as_i64().unwrap();
    wait_for(&router_b, id, "its first host in its steps", |d| in_steps(d, 0)).await;

    // A is cut from the database while web-01 is in its steps: it stops within its lease; B
    // takes it over once the lease expired, checks web-01, puts it back and goes on.
    proxy.cut();
    let cut = tokio::time::Instant::now();
    let taken = wait_for_epoch(&url, id, 2).await.duration_since(cut);
    eprintln!("taken over {taken:?} after the cut, for a lease of {LEASE:?}");
    fleet.executor.set_latency(Duration::from_millis(100));
    let d = wait_for(&router_b, id, "succeeded", |d| d["status"] == "succeeded").await;
    for h in d["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "succeeded", "{d}");
    }
    assert!(fleet.lb.out_of_rotation().is_empty(), "every server back: {d}");

    // Host side: no two commands ever ran on one host at once (A's step ended, aborted, before
    // B's first command there), and the load balancer never had two servers out at once.
    let runs = recorded.runs.lock().unwrap().clone();
    for (i, (host, script, _, end)) in runs.iter().enumerate() {
        let end = end.unwrap_or_else(|| panic!("{host}: {script} never ended"));
        for (other, other_script, other_start, _) in &runs[i + 1..] {
            assert!(
                other != host || *other_start >= end,
                "{host}: {other_script:?} began while {script:?} still ran: two instances drove it"
            );
        }
    }
    let installs = runs.iter().filter(|(h, s, _, _)| h == "web-01" && s.contains("install-app")).count();
    assert_eq!(installs, 2, "web-01: A's step, then B's full pass");
    assert_eq!(fleet.lb.rotation_log().max_out_of_rotation, 1, "one server out at a time, by one instance");
}

async fn order(router: &Router, id: i64, verb: &str) -> support::Reply {
    call(router, Method::POST, &format!("/v1/deployments/{id}/{verb}"), Some(PAYMENTS), None, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_confirm_sent_to_another_instance_reach_the_one_running_it() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(300));
    let (_a, router_a) = open(&url, "instance-a", &fleet).await;
    let (_b, router_b) = open(&url, "instance-b", &fleet).await;
    let mut body = fleet.body("shop", "production", "payments");
    body["strategy"]["canary"] = serde_json::json!({ "hosts": 1, "confirm": true });
    let (status, reply) = post(&router_a, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let id = reply["id"].as_i64().unwrap();

    // B refuses to resume what no one paused, as A would.
    let refused = order(&router_b, id, "resume").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);

    // The canary waits on A; B pauses it, then confirms it: A stays paused.
    wait_for(&router_a, id, "its canary waiting", |d| d["links"]["confirm"].is_string()).await;
    let paused = order(&router_b, id, "pause").await;
    assert_eq!(paused.status, StatusCode::ACCEPTED, "{}", paused.text);
    wait_for(&router_a, id, "paused on A", |d| d["paused"] == true).await;
    let confirmed = order(&router_b, id, "confirm").await;
    assert_eq!(confirmed.status, StatusCode::ACCEPTED, "{}", confirmed.text);
    tokio::time::sleep(LEASE * 2).await;
    let d = get(&router_a, id).await;
    assert_eq!(d["hosts"][1]["phase"], "pending", "confirmed, but paused: no host starts: {d}");

    // B resumes it: A goes on (the confirmation given while paused holds) and ends.
    let resumed = order(&router_b, id, "resume").await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.text);
    let d = wait_for(&router_b, id, "succeeded", |d| d["status"] == "succeeded").await;
    assert_eq!(d["totals"]["succeeded"], 3, "{d}");
    let kinds: Vec<String> = events(&router_b, id).await.into_iter().map(|e| e.event).collect();
    assert!(kinds.contains(&"paused".to_owned()) && kinds.contains(&"resumed".to_owned()), "{kinds:?}");
    let ended = order(&router_b, id, "pause").await;
    assert_eq!(ended.status, StatusCode::CONFLICT, "{}", ended.text);
}

fn host(name: &str) -> vesemir_core::name::HostName {
    vesemir_core::name::HostName::new(name).unwrap()
}

/// Deployment `id`'s events of type `kind`, through `router`'s stream.
async fn events_of(router: &Router, id: i64, kind: &str) -> Vec<Sse> {
    events(router, id).await.into_iter().filter(|e| e.event == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_failures_counts_the_hosts_that_failed_before_the_takeover() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(4);
    fleet.executor.set_latency(Duration::from_secs(50));
    let (_b, router) = open(&url, "instance-b", &fleet).await;
    let mut body = fleet.body("shop", "production", "payments");
    body["strategy"] = serde_json::json!({ "concurrency": 1, "max_failures": 1 });
    // web-01 fails (unreachable, left in rotation) on A, within the budget: web-02 goes on.
    fleet.executor.set_unreachable(&host("web-01"));
    let id = run_and_kill(&url, "instance-a", &fleet, move |router| async move {
        let (status, reply) = post(&router, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        let id = reply["id"].as_i64().unwrap();
        wait_for(&router, id, "web-01 failed, web-02 in its steps", |d| {
            d["hosts"][0]["outcome"] == "unreachable" && in_steps(d, 1)
        })
        .await;
        id
    });
    fleet.executor.set_latency(Duration::from_millis(100));
    // After the takeover web-03 fails too: two failures, more than max_failures = 1.
    fleet.executor.set_unreachable(&host("web-03"));

    let d = wait_for(&router, id, "ended", |d| d["status"] != "running").await;
    assert_eq!(d["status"], "stopped", "stopped as it would have without a takeover: {d}");
    let outcomes: Vec<&str> =
        d["hosts"].as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["unreachable", "succeeded", "unreachable", "skipped"], "{d}");
    assert!(fleet.executor.commands(&host("web-04")).is_empty(), "web-04 never started");
    let stopping = events_of(&router, id, "stopping").await;
    assert_eq!(stopping.len(), 1, "{stopping:?}");
    assert_eq!(
        stopping[0].data["cause"],
        serde_json::json!({ "kind": "too_many_failures", "failed": 2, "max_failures": 1 }),
        "the whole deployment's failures against its whole budget"
    );
    let finished = events_of(&router, id, "deployment_finished").await;
    assert_eq!(finished[0].data["outcome"], "stopped", "{:?}", finished[0].data);
    assert!(fleet.lb.out_of_rotation().is_empty(), "every server back");
}

/// Runs a canary deployment of `body` on instance `name` (killed at the end): waits for its
/// canary to wait, confirms it there when `confirm`, then waits until `until` holds.
fn canary_then_kill(
    url: &str,
    name: &str,
    fleet: &Fleet,
    body: &Value,
    confirm: bool,
    until: fn(&Value) -> bool,
) -> i64 {
    let (body, latency, database) = (body.clone(), fleet.executor.clone(), url.to_owned());
    run_and_kill(url, name, fleet, move |router| async move {
        let (status, reply) = post(&router, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        let id = reply["id"].as_i64().unwrap();
        wait_for(&router, id, "its canary waiting", |d| d["links"]["confirm"].is_string()).await;
        // Killed only once the wait is stored: events not stored yet die with the instance.
        wait_for_stored(&database, id, "canary_confirmation").await;
        // From now on every host is slow: the kill finds what `until` waits for.
        latency.set_latency(Duration::from_secs(50));
        if confirm {
            let confirmed = order(&router, id, "confirm").await;
            assert_eq!(confirmed.status, StatusCode::ACCEPTED, "{}", confirmed.text);
        }
        wait_for(&router, id, "the state to kill it in", until).await;
        id
    })
}

/// Polls the database until one of deployment `id`'s stored events contains `text`, for at
/// most 20 s.
async fn wait_for_stored(url: &str, id: i64, text: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let pattern = format!("%{text}%");
    loop {
        let found: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE deployment_id = $1 AND body LIKE $2")
                .bind(id)
                .bind(&pattern)
                .fetch_one(&pool)
                .await
                .unwrap();
        if found > 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "deployment {id} never stored an event with {text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn canary_body(fleet: &Fleet) -> Value {
    let mut body = fleet.body("shop", "production", "payments");
    body["strategy"]["canary"] = serde_json::json!({ "hosts": 1, "confirm": true });
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_confirmed_before_the_takeover_is_not_asked_for_again() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(100));
    let (_b, router) = open(&url, "instance-b", &fleet).await;
    let id = canary_then_kill(&url, "instance-a", &fleet, &canary_body(&fleet), true, |d| in_steps(d, 1));
    fleet.executor.set_latency(Duration::from_millis(100));

    // B puts web-02 back, deploys it and web-03, and never waits for a confirmation again.
    let d = wait_for(&router, id, "succeeded", |d| {
        assert!(d["links"]["confirm"].is_null(), "asked for a confirmation again: {d}");
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(d["totals"]["succeeded"], 3, "{d}");
    let waits: Vec<Sse> = events_of(&router, id, "waiting").await;
    let canary_waits = waits.iter().filter(|e| e.data["reason"]["for"] == "canary_confirmation").count();
    assert_eq!(canary_waits, 1, "one wait for the canary, before the takeover: {waits:?}");
    assert_eq!(events_of(&router, id, "handover").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_waiting_at_the_takeover_keeps_waiting_for_a_confirmation_from_any_instance() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    let (b, router_b) = open(&url, "instance-b", &fleet).await;
    let (c, router_c) = open(&url, "instance-c", &fleet).await;
    let installs = |name: &str| {
        fleet.executor.commands(&host(name)).iter().filter(|c| c.script.contains("install-app")).count()
    };
    // Confirmed once through the instance that took it over, once through the other one.
    for (round, through_taker) in [("a1", true), ("a2", false)] {
        let (web01, web02) = (installs("web-01"), installs("web-02"));
        fleet.executor.set_latency(Duration::from_millis(100));
        let id = canary_then_kill(&url, round, &fleet, &canary_body(&fleet), false, |_| true);
        fleet.executor.set_latency(Duration::from_millis(100));
        wait_for_epoch(&url, id, 2).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b.active_deployments() + c.active_deployments() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "{round}: no instance runs it");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (taker, other) =
            if b.active_deployments() == 1 { (&router_b, &router_c) } else { (&router_c, &router_b) };
        // It still waits, and says so; no other host starts.
        wait_for(taker, id, "its confirm link", |d| d["links"]["confirm"].is_string()).await;
        tokio::time::sleep(LEASE * 2).await;
        let d = get(taker, id).await;
        assert_eq!(d["status"], "running", "{d}");
        assert_eq!(d["hosts"][1]["phase"], "pending", "{round}: no host starts before the confirmation: {d}");
        assert_eq!(installs("web-02"), web02, "{round}: web-02 started unconfirmed");

        let confirmer = if through_taker { taker } else { other };
        let confirmed = order(confirmer, id, "confirm").await;
        assert_eq!(confirmed.status, StatusCode::ACCEPTED, "{}", confirmed.text);
        let d = wait_for(confirmer, id, "succeeded", |d| d["status"] == "succeeded").await;
        assert_eq!(d["totals"]["succeeded"], 3, "{d}");
        assert_eq!(installs("web-01"), web01 + 1, "{round}: the canary is not deployed again");
        assert_eq!(events_of(taker, id, "handover").await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_shows_on_every_instance_and_holds_across_a_takeover_until_resumed() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(300));
    let (_b, router_b) = open(&url, "instance-b", &fleet).await;
    let body = fleet.body("shop", "production", "payments");
    let reader = router_b.clone();
    let id = run_and_kill(&url, "instance-a", &fleet, move |router| async move {
        let (status, reply) = post(&router, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        let id = reply["id"].as_i64().unwrap();
        wait_for(&router, id, "its first host in its steps", |d| in_steps(d, 0)).await;
        let paused = order(&router, id, "pause").await;
        assert_eq!(paused.status, StatusCode::ACCEPTED, "{}", paused.text);
        // B reads it paused while A runs it: the view and the list.
        let d = get(&reader, id).await;
        assert_eq!(d["paused"], true, "B shows A's pause: {d}");
        assert_eq!(d["links"]["resume"], format!("/v1/deployments/{id}/resume"), "{d}");
        assert!(d["links"]["pause"].is_null(), "{d}");
        let list = call(&reader, Method::GET, "/v1/deployments", Some(ADMIN), None, &[]).await;
        assert_eq!(list.json["deployments"][0]["paused"], true, "{}", list.text);
        // web-01 (in flight) finishes; nothing else starts.
        wait_for(&router, id, "web-01 ended", |d| d["hosts"][0]["outcome"] == "succeeded").await;
        id
    });
    fleet.executor.set_latency(Duration::from_millis(100));
    wait_for_epoch(&url, id, 2).await;

    // B holds it paused: no host starts for two lease times.
    tokio::time::sleep(LEASE * 2).await;
    let d = get(&router_b, id).await;
    assert_eq!(d["paused"], true, "{d}");
    assert_eq!(d["status"], "running", "{d}");
    assert!(fleet.executor.commands(&host("web-02")).is_empty(), "web-02 started while paused: {d}");

    let resumed = order(&router_b, id, "resume").await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.text);
    let d = wait_for(&router_b, id, "succeeded", |d| d["status"] == "succeeded").await;
    assert_eq!(d["totals"]["succeeded"], 3, "{d}");
    assert_eq!(d["paused"], false, "{d}");
    let kinds: Vec<String> = events(&router_b, id).await.into_iter().map(|e| e.event).collect();
    let handover = kinds.iter().position(|k| k == "handover").unwrap();
    assert!(kinds[handover..].contains(&"resumed".to_owned()), "the resume after the handover: {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_an_instance_whose_database_stalls_answer_503_within_a_bound() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let proxy = Proxy::start(cluster.port).await;
    let url_a = url.replace(&format!(":{}/", cluster.port), &format!(":{}/", proxy.port));
    let fleet = Fleet::new(2);
    let (_a, router_a) = open(&url_a, "instance-a", &fleet).await;
    let (_b, router_b) = open(&url, "instance-b", &fleet).await;
    let (status, reply) = post(&router_b, &fleet.body("shop", "production", "payments")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let id = reply["id"].as_i64().unwrap();
    wait_for(&router_a, id, "succeeded", |d| d["status"] == "succeeded").await;

    // A's database stops answering (nothing refused): its reads answer 503 at once, not hang.
    proxy.stall();
    for path in [
        format!("/v1/deployments/{id}"),
        "/v1/deployments".to_owned(),
        format!("/v1/deployments/{id}/events"),
    ] {
        let started = tokio::time::Instant::now();
        let reply = call(&router_a, Method::GET, &path, Some(ADMIN), None, &[]).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(8), "{path} took {took:?}");
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/problem+json", "{path}");
        assert!(reply.headers.contains_key("retry-after"), "{path}: {:?}", reply.headers);
        let detail = reply.json["detail"].as_str().unwrap();
        assert!(detail.contains("database") && detail.contains("another server"), "{path}: {detail}");
    }
    // B, on the database directly, still answers.
    assert_eq!(get(&router_b, id).await["status"], "succeeded");
}
