//! Several servers on one PostgreSQL database (a real cluster this test starts), in one test
//! process over one fake fleet: admission across instances, a cancel through another
//! instance, an instance that dies mid-rollout (another ends its deployment once its lease
//! expires, and recovers it), and fencing (an instance whose lease was taken stops acting).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use serde_json::Value;
use support::{call, config, Fleet, ADMIN, PAYMENTS};
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
    let (url, name, fleet, body) = (url.to_owned(), name.to_owned(), fleet.clone(), body.clone());
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let id = runtime.block_on(async {
            let (_server, router) = open(&url, &name, &fleet).await;
            let (status, reply) = post(&router, &body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
            let id = reply["id"].as_i64().unwrap();
            wait_for(&router, id, "its first host in its steps", |d| in_steps(d, 0)).await;
            id
        });
        runtime.shutdown_timeout(Duration::from_millis(100));
        id
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_instance_dies_mid_rollout_another_ends_its_deployment_after_the_lease_and_recovers_it() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(50));
    let (_b, router) = open(&url, "instance-b", &fleet).await;
    let body = fleet.body("shop", "production", "payments");
    let id = start_and_kill(&url, "instance-a", &fleet, &body);
    assert_eq!(fleet.lb.out_of_rotation().len(), 1, "the first host was left drained");
    let killed = tokio::time::Instant::now();

    let d = wait_for(&router, id, "interrupted", |d| d["status"] == "interrupted").await;
    let waited = killed.elapsed();
    assert!(waited <= LEASE * 4, "ended {waited:?} after the kill, for a lease of {LEASE:?}");
    assert!(d["error"].as_str().unwrap().contains("instance-a/"), "names the instance: {d}");
    assert_eq!(d["out_of_rotation"], serde_json::json!(["web-01"]), "from the journal: {d}");

    fleet.executor.set_latency(Duration::ZERO);
    let recover =
        call(&router, Method::POST, &format!("/v1/deployments/{id}/recover"), Some(PAYMENTS), None, &[])
            .await;
    assert_eq!(recover.status, StatusCode::OK, "{}", recover.text);
    assert!(fleet.lb.out_of_rotation().is_empty(), "recovered: {}", recover.text);
    let (status, next) = post(&router, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the unit is free again: {next}");
    let next = next["id"].as_i64().unwrap();
    let d = wait_for(&router, next, "finished", |d| d["status"] == "succeeded").await;
    assert_eq!(d["hosts"].as_array().unwrap().len(), 3);
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
/// accepting (a network split between an instance and the database).
struct Proxy {
    port: u16,
    tasks: tokio::task::JoinSet<()>,
}

impl Proxy {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut tasks = tokio::task::JoinSet::new();
        let connections = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            let _held = held;
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                connections.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, tasks }
    }

    /// Stops accepting and drops every connection (the connection tasks go with the acceptor).
    fn cut(&mut self) {
        self.tasks.abort_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_from_the_database_stops_and_another_ends_its_deployment() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let url = cluster.database();
    let mut proxy = Proxy::start(cluster.port).await;
    let url_a = url.replace(&format!(":{}/", cluster.port), &format!(":{}/", proxy.port));
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_secs(2));
    let (_a, router_a) = open(&url_a, "instance-a", &fleet).await;
    let (_b, router_b) = open(&url, "instance-b", &fleet).await;
    let (status, reply) = post(&router_a, &fleet.body("shop", "production", "payments")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let id = reply["id"].as_i64().unwrap();
    wait_for(&router_b, id, "its first host in its steps", |d| in_steps(d, 0)).await;

    proxy.cut();
    let changes = fleet.lb.rotation_log().changes.len();
    let d = wait_for(&router_b, id, "interrupted", |d| d["status"] == "interrupted").await;
    assert!(d["error"].as_str().unwrap().contains("instance-a/"), "{d}");
    assert_eq!(d["out_of_rotation"], serde_json::json!(["web-01"]), "{d}");
    // A's step ends meanwhile (2 s); it stopped (no lease renewed) and could not journal a
    // put-back or the next host's drain, so it made no change. (Its task winds down as its
    // store calls time out.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fleet.lb.rotation_log().changes.len(),
        changes,
        "a change by the instance cut from the database"
    );
    assert_eq!(fleet.lb.out_of_rotation().len(), 1);

    fleet.executor.set_latency(Duration::ZERO);
    let recover =
        call(&router_b, Method::POST, &format!("/v1/deployments/{id}/recover"), Some(PAYMENTS), None, &[])
            .await;
    assert_eq!(recover.status, StatusCode::OK, "{}", recover.text);
    assert!(fleet.lb.out_of_rotation().is_empty(), "{}", recover.text);
}
