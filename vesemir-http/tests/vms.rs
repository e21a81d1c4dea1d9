//! VMs through the API (issue 19) on SQLite, with fakes of the provisioning's ports
//! (`support/provision_fakes.rs`) and a real slapd for the directory of owners: a VM for a
//! directory user built and followed over SSE (resumed by `Last-Event-ID`), default names, the
//! owner's limit under 8 concurrent creates, owners not in the directory and teams not allowed
//! refused before anything is recorded, a failing step undone with its reservation, a cancel
//! while waiting for SSH, a destroy whose events follow the create's, a destroy while creating
//! refused, a restart with a create running (in its bootstrap, or before SSH answered) that
//! shows it interrupted (then destroyed from what its events say was built); and two instances on
//! one PostgreSQL: the limit holds across them, a VM created on one is followed live on the
//! other, whose cancel is refused naming the instance that runs it, two destroys of one VM sent
//! to both at once starting once, a VM of an instance that died shown interrupted by another
//! (then destroyed there); a stop cancels the creates running there.
#![allow(clippy::unwrap_used)]

#[path = "support/provision_fakes.rs"]
mod provision_fakes;
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use provision_fakes::{Fail, VmPorts, World, KEY};
use serde_json::{json, Value};
use support::{call, parse_sse, Reply, Sse, ADMIN, PAYMENTS, SEARCH};
use vesemir_http::store::Store;
use vesemir_http::web::LdapConfig;
use vesemir_http::{Database, PostgresUrl, Server, ServerConfig, SqliteStore, VmAllow, VmRules};
use vesemir_testkit::postgres::Postgres;
use vesemir_testkit::slapd::{Slapd, SlapdUser};

fn people() -> Vec<SlapdUser> {
    ["alice", "bob", "carol", "dave"].iter().map(|uid| SlapdUser::new(uid, "pw", &["everyone"])).collect()
}

fn ldap_section(slapd: &Slapd, password_file: &std::path::Path) -> LdapConfig {
    let text = format!(
        r#"
url = "{url}"
bind_dn = "{service}"
bind_password_file = "{password}"
user_base = "{people}"
group_base = "{groups}"
timeout = "2s"
[[groups]]
group = "everyone"
teams = ["payments"]
roles = ["deploy", "read"]
"#,
        url = slapd.url(),
        service = Slapd::SERVICE_DN,
        password = password_file.display(),
        people = Slapd::PEOPLE,
        groups = Slapd::GROUPS,
    );
    toml::from_str(&text).expect("a valid [ldap] section")
}

struct Lab {
    _slapd: Slapd,
    _secret: tempfile::NamedTempFile,
    dir: tempfile::TempDir,
    world: Arc<World>,
    config: ServerConfig,
    factory: Arc<VmPorts>,
    server: Server,
    router: Router,
}

impl Lab {
    /// slapd with alice, bob, carol and dave; a server whose team payments may create `small`
    /// VMs, at most 2 per owner; SSH waited for `ssh_timeout`.
    async fn start(ssh_timeout: Duration) -> Self {
        Self::start_on(ssh_timeout, |_| {}).await
    }

    /// [`Lab::start`], the server's configuration changed by `change` (its database...).
    async fn start_on(ssh_timeout: Duration, change: impl FnOnce(&mut ServerConfig)) -> Self {
        let slapd = tokio::task::spawn_blocking(|| Slapd::start(&people())).await.expect("starts");
        let secret = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(secret.path(), format!("{}\n", Slapd::SERVICE_PASSWORD)).expect("writes");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = support::config(&dir.path().join("vesemir.db"));
        config.ldap = Some(ldap_section(&slapd, secret.path()));
        config.vms = Some(VmRules {
            max_per_owner: 2,
            allow: vec![VmAllow {
                team: "payments".into(),
                flavors: vec!["small".into()],
                max_per_owner: None,
            }],
        });
        change(&mut config);
        let world = Arc::new(World::default());
        let fleet = support::Fleet::new(1);
        let factory =
            Arc::new(VmPorts::new(fleet.ports(), provision_fakes::provisioning(&world, ssh_timeout)));
        let server = Server::open(&config, factory.clone()).await.expect("the server opens");
        let router = server.router();
        Self { _slapd: slapd, _secret: secret, dir, world, config, factory, server, router }
    }

    /// Another server on the same configuration, directory and fakes, changed by `change`.
    async fn another(&self, change: impl FnOnce(&mut ServerConfig)) -> (Server, Router) {
        let mut config = self.config.clone();
        change(&mut config);
        let server = Server::open(&config, self.factory.clone()).await.expect("the server opens");
        let router = server.router();
        (server, router)
    }

    fn database(&self) -> PathBuf {
        self.dir.path().join("vesemir.db")
    }

    async fn post(&self, token: &str, body: Value) -> Reply {
        call(&self.router, Method::POST, "/v1/vms", Some(token), Some(&body.to_string()), &[]).await
    }

    async fn get(&self, path: &str) -> Reply {
        call(&self.router, Method::GET, path, Some(ADMIN), None, &[]).await
    }

    async fn order(&self, method: Method, path: &str) -> Reply {
        call(&self.router, method, path, Some(PAYMENTS), None, &[]).await
    }

    /// Polls VM `name` until `done` holds of it, for at most 20 s.
    async fn wait(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.get(&format!("/v1/vms/{name}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            if done(&reply.json) {
                return reply.json;
            }
            assert!(tokio::time::Instant::now() < deadline, "VM {name} never got {what}: {}", reply.json);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until VM `name`'s create or destroy has ended.
    async fn wait_ended(&self, name: &str) -> Value {
        self.wait(name, "to an end", |v| !matches!(v["status"].as_str(), Some("creating" | "destroying")))
            .await
    }

    /// VM `name`'s events after `after` (the stream ends once its run has).
    async fn events(&self, name: &str, after: Option<&str>) -> Vec<Sse> {
        let headers: Vec<(&str, &str)> = after.map(|a| ("last-event-id", a)).into_iter().collect();
        let reply = call(
            &self.router,
            Method::GET,
            &format!("/v1/vms/{name}/events"),
            Some(PAYMENTS),
            None,
            &headers,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        parse_sse(&reply.text)
    }

    /// The reservations held, read from the database.
    async fn reservations(&self) -> usize {
        let store = SqliteStore::open(&self.database()).await.expect("opens");
        store.vm_reservations().await.expect("reads").len()
    }
}

fn ids(events: &[Sse]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_for_a_directory_user_is_built_followed_and_destroyed() {
    let lab = Lab::start(Duration::from_secs(20)).await;
    let created = lab.post(PAYMENTS, json!({ "owner": "alice", "flavor": "small" })).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.text);
    assert_eq!(created.headers["location"], "/v1/vms/alice-1");
    assert_eq!(created.json["status"], "creating");
    assert_eq!(created.json["links"]["cancel"], "/v1/vms/alice-1/cancel");
    let ready = lab.wait_ended("alice-1").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["fqdn"], "alice-1.lab.test");
    assert_eq!(ready["login"], "ssh alice@alice-1.lab.test");
    assert_eq!(ready["ssh_host_key"], KEY);
    assert_eq!(ready["address"], "10.0.0.10");
    assert_eq!(ready["requested_by"], "payments-ci");
    assert!(lab.world.has("alice-1"));

    // Every event, in order, ending `finished`; resumed after the third.
    let events = lab.events("alice-1", None).await;
    let n = u64::try_from(events.len()).unwrap();
    assert!(n > 10, "{events:?}");
    assert_eq!(ids(&events), (1..=n).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.event == "provision"));
    assert_eq!(events[0].data["type"], "started");
    let last = &events[events.len() - 1].data;
    assert_eq!((&last["type"], &last["outcome"]["result"]), (&json!("finished"), &json!("ready")), "{last}");
    assert!(events.iter().any(|e| e.data["text"] == "Chef Infra Client finished"), "the bootstrap's output");
    assert_eq!(ids(&lab.events("alice-1", Some("3")).await), (4..=n).collect::<Vec<_>>());

    // The next default name; then the owner is at the limit.
    let second = lab.post(PAYMENTS, json!({ "owner": "alice", "flavor": "small" })).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.text);
    assert_eq!(second.json["name"], "alice-2");
    let third = lab.post(PAYMENTS, json!({ "owner": "alice", "flavor": "small" })).await;
    assert_eq!(third.status, StatusCode::CONFLICT, "{}", third.text);
    let detail = third.json["detail"].as_str().unwrap();
    assert!(detail.contains("holds 2") && detail.contains("vesemir vm destroy"), "{detail}");

    // Refused before anything is recorded: an owner the directory does not know, a team not
    // allowed the flavor, an unknown flavor, a name that is no label.
    let stranger = lab.post(PAYMENTS, json!({ "owner": "mallory", "flavor": "small" })).await;
    assert_eq!(stranger.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", stranger.text);
    assert_eq!(stranger.json["problems"][0]["field"], "owner");
    assert!(stranger.json["detail"].as_str().unwrap().contains("mallory"), "{}", stranger.text);
    let search = lab.post(SEARCH, json!({ "owner": "bob", "flavor": "small" })).await;
    assert_eq!(search.status, StatusCode::FORBIDDEN, "{}", search.text);
    assert!(search.json["detail"].as_str().unwrap().contains("search"), "{}", search.text);
    let huge = lab.post(PAYMENTS, json!({ "owner": "bob", "flavor": "huge" })).await;
    assert_eq!(huge.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", huge.text);
    assert!(huge.json["detail"].as_str().unwrap().contains("large, small"), "{}", huge.text);
    let bad = lab.post(PAYMENTS, json!({ "owner": "bob", "flavor": "small", "name": "Bob_1" })).await;
    assert_eq!(
        (bad.status, &bad.json["problems"][0]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("name"))
    );
    for owner in ["mallory", "bob"] {
        let listed = lab.get(&format!("/v1/vms?owner={owner}")).await;
        assert_eq!(listed.json["vms"], json!([]), "{owner}: {}", listed.text);
    }
    lab.wait_ended("alice-2").await;

    // Destroyed: its parts gone, its events after the create's on the same stream.
    let destroying = lab.order(Method::DELETE, "/v1/vms/alice-1").await;
    assert_eq!(destroying.status, StatusCode::ACCEPTED, "{}", destroying.text);
    assert_eq!(destroying.json["status"], "destroying");
    let destroyed = lab.wait_ended("alice-1").await;
    assert_eq!(destroyed["status"], "destroyed", "{destroyed}");
    assert!(!lab.world.has("alice-1") && lab.world.has("alice-2"), "{}", lab.world.describe());
    let all = lab.events("alice-1", None).await;
    let m = u64::try_from(all.len()).unwrap();
    assert!(m > n + 5, "{all:?}");
    assert_eq!(ids(&all), (1..=m).collect::<Vec<_>>());
    let first_of_destroy = &all[usize::try_from(n).unwrap()].data;
    assert_eq!(
        (&first_of_destroy["type"], &first_of_destroy["mode"]),
        (&json!("started"), &json!("destroy"))
    );
    assert_eq!(all[all.len() - 1].data["outcome"]["result"], "destroyed");
    let again = lab.order(Method::DELETE, "/v1/vms/alice-1").await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.json["detail"].as_str().unwrap().contains("destroyed already"), "{}", again.text);

    // Its name is free again: the lowest free number.
    let reused = lab.post(PAYMENTS, json!({ "owner": "alice", "flavor": "small" })).await;
    assert_eq!(reused.json["name"], "alice-1", "{}", reused.text);
    lab.wait_ended("alice-1").await;

    // Eight concurrent creates for one owner with a limit of two: exactly two are accepted.
    let creates = (0..8).map(|_| lab.post(PAYMENTS, json!({ "owner": "bob", "flavor": "small" })));
    let replies = futures_util::future::join_all(creates).await;
    let accepted: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::ACCEPTED).collect();
    let refused = replies.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
    assert_eq!(
        (accepted.len(), refused),
        (2, 6),
        "{:?}",
        replies.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let mut names: Vec<String> =
        accepted.iter().map(|r| r.json["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["bob-1", "bob-2"]);

    // Everything destroyed: nothing left in the fakes or the reservations.
    for name in ["alice-1", "alice-2", "bob-1", "bob-2"] {
        assert_eq!(lab.wait_ended(name).await["status"], "ready");
        let reply = lab.order(Method::DELETE, &format!("/v1/vms/{name}")).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{name}: {}", reply.text);
    }
    for name in ["alice-1", "alice-2", "bob-1", "bob-2"] {
        assert_eq!(lab.wait_ended(name).await["status"], "destroyed");
    }
    assert!(lab.world.is_empty(), "{}", lab.world.describe());
    assert_eq!(lab.reservations().await, 0);
    let listed = lab.get("/v1/vms?status=destroyed&owner=alice").await;
    assert_eq!(listed.json["vms"].as_array().map(Vec::len), Some(3), "{}", listed.text);
    let flavors = call(&lab.router, Method::GET, "/v1/vm-flavors", Some(PAYMENTS), None, &[]).await;
    assert_eq!(
        flavors.json,
        json!({ "flavors": [{ "name": "small", "cores": 1, "memory_mib": 512, "disk_gib": 10 }], "max_per_owner": 2 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_cancels_leave_nothing_and_a_restart_shows_a_running_create_interrupted() {
    let lab = Lab::start(Duration::from_secs(60)).await;

    // A step that fails: the VM says which and why, every part and the reservation are gone.
    lab.world.fail(Some(Fail::Chef));
    let failing = lab.post(PAYMENTS, json!({ "owner": "carol", "flavor": "small" })).await;
    assert_eq!(failing.status, StatusCode::ACCEPTED, "{}", failing.text);
    let failed = lab.wait_ended("carol-1").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure"]["step"], "chef");
    assert!(failed["failure"]["reason"].as_str().unwrap().contains("refused by the test"), "{failed}");
    assert!(failed["next"].is_string(), "{failed}");
    assert!(lab.world.is_empty(), "{}", lab.world.describe());
    assert_eq!(lab.reservations().await, 0);
    lab.world.fail(None);

    // Cancelled while waiting for SSH (a destroy is refused meanwhile): nothing left.
    lab.world.set_deaf(true);
    let waiting = lab.post(PAYMENTS, json!({ "owner": "carol", "flavor": "small" })).await;
    assert_eq!(waiting.json["name"], "carol-1", "a failed VM frees its name: {}", waiting.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !lab.world.domains.lock().unwrap().contains("carol-1") {
        assert!(tokio::time::Instant::now() < deadline, "carol-1's domain never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = lab.order(Method::DELETE, "/v1/vms/carol-1").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.json["detail"].as_str().unwrap().contains("cancel it first"), "{}", refused.text);
    let cancel = lab.order(Method::POST, "/v1/vms/carol-1/cancel").await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.text);
    let cancelled = lab.wait_ended("carol-1").await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(lab.world.is_empty(), "{}", lab.world.describe());
    assert_eq!(lab.reservations().await, 0);
    let again = lab.order(Method::POST, "/v1/vms/carol-1/cancel").await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

    // A restart while a create runs (its bootstrap): the new server shows it interrupted, and
    // destroys what its events say was built.
    lab.world.set_deaf(false);
    lab.world.stuck_bootstrap.store(true, std::sync::atomic::Ordering::SeqCst);
    let running = lab.post(PAYMENTS, json!({ "owner": "dave", "flavor": "small" })).await;
    assert_eq!(running.status, StatusCode::ACCEPTED, "{}", running.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !lab.world.nodes.lock().unwrap().contains("dave-1.lab.test") {
        assert!(tokio::time::Instant::now() < deadline, "dave-1 never reached its bootstrap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarted = Server::open(&lab.config, lab.factory.clone()).await.expect("reopens");
    let router = restarted.router();
    let view = call(&router, Method::GET, "/v1/vms/dave-1", Some(ADMIN), None, &[]).await;
    assert_eq!(view.json["status"], "interrupted", "{}", view.text);
    assert!(view.json["next"].as_str().unwrap().contains("vesemir vm destroy dave-1"), "{}", view.text);
    let destroying = call(&router, Method::DELETE, "/v1/vms/dave-1", Some(PAYMENTS), None, &[]).await;
    assert_eq!(destroying.status, StatusCode::ACCEPTED, "{}", destroying.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = call(&router, Method::GET, "/v1/vms/dave-1", Some(ADMIN), None, &[]).await;
        if view.json["status"] == "destroyed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dave-1 never destroyed: {}", view.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!lab.world.has("dave-1"), "{}", lab.world.describe());
    assert_eq!(lab.reservations().await, 0);
    lab.world.stuck_bootstrap.store(false, std::sync::atomic::Ordering::SeqCst);

    // A restart before SSH ever answered (no host key recorded): the destroy takes down every
    // step its events say started (reservation, DNS records, disk, domain) all the same.
    lab.world.set_deaf(true);
    let early = lab.post(PAYMENTS, json!({ "owner": "carol", "flavor": "small" })).await;
    assert_eq!(early.status, StatusCode::ACCEPTED, "{}", early.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !lab.world.domains.lock().unwrap().contains("carol-1") {
        assert!(tokio::time::Instant::now() < deadline, "carol-1's domain never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = Server::open(&lab.config, lab.factory.clone()).await.expect("reopens");
    let router = again.router();
    let view = call(&router, Method::GET, "/v1/vms/carol-1", Some(ADMIN), None, &[]).await;
    assert_eq!(view.json["status"], "interrupted", "{}", view.text);
    assert!(view.json.get("ssh_host_key").is_none(), "SSH never answered: {}", view.text);
    let destroying = call(&router, Method::DELETE, "/v1/vms/carol-1", Some(PAYMENTS), None, &[]).await;
    assert_eq!(destroying.status, StatusCode::ACCEPTED, "{}", destroying.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let view = call(&router, Method::GET, "/v1/vms/carol-1", Some(ADMIN), None, &[]).await;
        if view.json["status"] == "destroyed" {
            break view;
        }
        assert!(tokio::time::Instant::now() < deadline, "carol-1 never destroyed: {}", view.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ended.json.get("left_behind").is_none(), "{}", ended.text);
    assert!(!lab.world.has("carol-1"), "{}", lab.world.describe());
    assert_eq!(lab.reservations().await, 0);
    lab.world.set_deaf(false);
    lab.server.shutdown().await;
}

/// Server instance `instance` on the PostgreSQL database `url`.
fn on_postgres(url: &str, instance: &str) -> impl FnOnce(&mut ServerConfig) {
    let (url, instance) = (url.to_owned(), instance.to_owned());
    move |config| {
        config.database = Database::Postgres(PostgresUrl::parse(&url).unwrap());
        config.cluster.instance = Some(instance);
        config.cluster.lease = Duration::from_secs(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_share_the_limit_and_follow_each_others_vms() {
    let cluster = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = cluster.database();
    let a = Lab::start_on(Duration::from_secs(60), on_postgres(&url, "a")).await;
    let (_b, b) = a.another(on_postgres(&url, "b")).await;

    // Eight concurrent creates for one owner over both instances: exactly two are accepted.
    let body = json!({ "owner": "bob", "flavor": "small" }).to_string();
    let creates = (0..8).map(|i| {
        let router = if i % 2 == 0 { a.router.clone() } else { b.clone() };
        let body = body.clone();
        async move { call(&router, Method::POST, "/v1/vms", Some(PAYMENTS), Some(&body), &[]).await }
    });
    let replies = futures_util::future::join_all(creates).await;
    let statuses: Vec<StatusCode> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 6, "{statuses:?}");

    // A create on a, waiting for SSH: b shows it, follows its events, refuses to cancel it.
    a.world.set_deaf(true);
    let created = a.post(PAYMENTS, json!({ "owner": "dave", "flavor": "small" })).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.text);
    a.wait("dave-1", "placed", |v| v["address"].is_string()).await;
    let on_b = call(&b, Method::GET, "/v1/vms/dave-1", Some(ADMIN), None, &[]).await;
    assert_eq!(on_b.json["status"], "creating", "{}", on_b.text);
    let refused = call(&b, Method::POST, "/v1/vms/dave-1/cancel", Some(PAYMENTS), None, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.json["detail"].as_str().unwrap().contains("instance a/"), "{}", refused.text);
    let follower = {
        let b = b.clone();
        tokio::spawn(async move {
            call(&b, Method::GET, "/v1/vms/dave-1/events", Some(PAYMENTS), None, &[]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = a.order(Method::POST, "/v1/vms/dave-1/cancel").await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.text);
    let followed = follower.await.unwrap();
    let events = parse_sse(&followed.text);
    let n = u64::try_from(events.len()).unwrap();
    assert_eq!(ids(&events), (1..=n).collect::<Vec<_>>(), "{}", followed.text);
    assert!(events.iter().any(|e| e.data["type"] == "cancel_requested"), "{}", followed.text);
    assert_eq!(events[events.len() - 1].data["type"], "finished", "{}", followed.text);
    let cancelled = call(&b, Method::GET, "/v1/vms/dave-1", Some(ADMIN), None, &[]).await;
    assert_eq!(cancelled.json["status"], "cancelled", "{}", cancelled.text);
    for name in ["bob-1", "bob-2"] {
        assert_eq!(a.wait_ended(name).await["status"], "ready");
    }

    // Two destroys of one VM sent to both instances at the same moment: one starts, the other
    // is refused (the store moves the row only from the status it was read in).
    let (on_a, on_b) = tokio::join!(
        call(&a.router, Method::DELETE, "/v1/vms/bob-1", Some(PAYMENTS), None, &[]),
        call(&b, Method::DELETE, "/v1/vms/bob-1", Some(PAYMENTS), None, &[]),
    );
    let mut statuses = [on_a.status, on_b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT], "{}\n{}", on_a.text, on_b.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = call(&b, Method::GET, "/v1/vms/bob-1", Some(ADMIN), None, &[]).await;
        if view.json["status"] == "destroyed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob-1 never destroyed: {}", view.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.world.has("bob-1"), "{}", a.world.describe());

    // Instance c dies (it stops renewing its leases) while a create runs there: b marks the VM
    // interrupted within a few lease times, without waiting for c to come back, and destroys
    // what its events say was built (SSH never answered: no host key).
    let (c_server, c) = a.another(on_postgres(&url, "c")).await;
    let doomed = call(
        &c,
        Method::POST,
        "/v1/vms",
        Some(PAYMENTS),
        Some(&json!({ "owner": "carol", "flavor": "small" }).to_string()),
        &[],
    )
    .await;
    assert_eq!(doomed.status, StatusCode::ACCEPTED, "{}", doomed.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !a.world.domains.lock().unwrap().contains("carol-1") {
        assert!(tokio::time::Instant::now() < deadline, "carol-1's domain never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((c_server, c));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view = call(&b, Method::GET, "/v1/vms/carol-1", Some(ADMIN), None, &[]).await;
        if view.json["status"] == "interrupted" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b never saw c's VM interrupted: {}", view.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let destroying = call(&b, Method::DELETE, "/v1/vms/carol-1", Some(PAYMENTS), None, &[]).await;
    assert_eq!(destroying.status, StatusCode::ACCEPTED, "{}", destroying.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = call(&b, Method::GET, "/v1/vms/carol-1", Some(ADMIN), None, &[]).await;
        if view.json["status"] == "destroyed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "carol-1 never destroyed: {}", view.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.world.has("carol-1"), "{}", a.world.describe());

    // a stops while a create runs there: it is cancelled, and nothing of it is left.
    let last = a.post(PAYMENTS, json!({ "owner": "dave", "flavor": "small" })).await;
    assert_eq!(last.json["name"], "dave-1", "{}", last.text);
    a.wait("dave-1", "placed", |v| v["address"].is_string()).await;
    a.server.shutdown().await;
    let after = call(&b, Method::GET, "/v1/vms/dave-1", Some(ADMIN), None, &[]).await;
    assert_eq!(after.json["status"], "cancelled", "{}", after.text);
    assert!(!a.world.has("dave-1"), "{}", a.world.describe());
}
