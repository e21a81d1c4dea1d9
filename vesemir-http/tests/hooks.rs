//! CI hooks on the real server (a loopback socket, a SQLite file): signed deliveries start
//! deployments; bad or missing signatures, unknown hooks, replays (same delivery id, same body
//! under a new id, a stale timestamp), bodies without a version or outside the unit's pattern
//! are refused with their statuses; a busy unit queues or refuses as the hook says; the secret
//! shows nowhere.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::*;
use vesemir_http::hooks::sign;
use vesemir_http::{FixedPorts, Server, ServerConfig};

const SECRET: &str = "hook-secret-4f1d7c2a9b8e6d5c";

/// Hooks on shop/production (queueing, with a timestamp) and shop/staging (refusing while
/// busy), their secret in a 0600 file.
fn with_hooks(dir: &std::path::Path, config: &mut ServerConfig) {
    let secret = dir.join("hook.secret");
    let mut file = std::fs::File::create(&secret).expect("creates");
    writeln!(file, "{SECRET}").expect("writes");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let hooks = format!(
        r#"
[[hooks]]
name = "shop-ci"
secret_file = "{path}"
version = "/release/version"
timestamp = "/sent_at"
max_age = "5m"
[[hooks]]
name = "shop-staging"
secret_file = "{path}"
version = "/version"
signature_header = "X-Hub-Signature-256"
delivery_header = "X-GitHub-Delivery"
when_busy = "reject"
"#,
        path = secret.display()
    );
    let table: toml::Table = hooks.parse().expect("toml");
    let hooks: Vec<vesemir_http::hooks::HookConfig> =
        table["hooks"].clone().try_into().expect("hook configs");
    for unit in &mut config.units {
        if unit.application == "shop" && unit.environment == "production" {
            unit.hooks = vec![hooks[0].clone()];
        }
        if unit.application == "shop" && unit.environment == "staging" {
            unit.hooks = vec![hooks[1].clone()];
        }
    }
}

struct Lab {
    loopback: Loopback,
    server: Server,
    fleet: Fleet,
    _dir: tempfile::TempDir,
}

async fn start(fleet: Fleet) -> Lab {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&dir.path().join("v.db"));
    with_hooks(dir.path(), &mut config);
    let server = Server::open(&config, Arc::new(FixedPorts(fleet.ports()))).await.expect("opens");
    let loopback = Loopback::serve(&server).await;
    Lab { loopback, server, fleet, _dir: dir }
}

/// One HTTP/1.1 POST over a fresh connection, with `headers`.
async fn post(loopback: &Loopback, path: &str, body: &str, headers: &[(&str, String)]) -> Reply {
    loopback.call_with_headers("POST", path, headers, Some(body)).await
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// A delivery to `shop-ci`, signed with `key`.
async fn deliver(lab: &Lab, delivery: &str, body: &Value, key: &str) -> Reply {
    let text = body.to_string();
    let headers = [
        ("X-Vesemir-Signature", sign(key.as_bytes(), text.as_bytes())),
        ("X-Vesemir-Delivery", delivery.to_owned()),
    ];
    post(&lab.loopback, "/v1/hooks/shop-ci", &text, &headers).await
}

fn release(version: &str, sent_at: i64) -> Value {
    json!({ "release": { "version": version, "commit": "abc123" }, "sent_at": sent_at })
}

async fn wait_finished(lab: &Lab, id: i64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = lab.loopback.call("GET", &format!("/v1/deployments/{id}"), Some(ADMIN), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        if !matches!(reply.json["status"].as_str(), Some("queued" | "running")) {
            return reply.json;
        }
        assert!(tokio::time::Instant::now() < deadline, "deployment {id} never ended: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_deploys_its_unit_once_and_bad_ones_are_refused() {
    let lab = start(Fleet::new(2)).await;
    let mut answers = Vec::new();
    let body = release("2.1.0", now_s());

    let started = deliver(&lab, "d-1", &body, SECRET).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    assert_eq!(started.json["state"], "started", "{}", started.text);
    assert_eq!(started.json["version"], "2.1.0");
    let id = started.json["deployment"]["id"].as_i64().expect("a deployment id");
    assert_eq!(started.headers["location"], format!("/v1/deployments/{id}"));
    answers.push(started.text.clone());
    let done = wait_finished(&lab, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["version"], "2.1.0");
    assert_eq!(done["requested_by"], "hook:shop-ci");
    assert_eq!(done["application"], "shop");
    assert_eq!(done["environment"], "production");

    // The same delivery again, and the same signed body under a new id: that deployment.
    for delivery in ["d-1", "d-1-replayed"] {
        let again = deliver(&lab, delivery, &body, SECRET).await;
        assert_eq!(again.status, StatusCode::OK, "{delivery}: {}", again.text);
        assert_eq!(again.json["deployment"]["id"], id, "{}", again.text);
        assert_eq!(again.json["delivery"], "d-1", "{}", again.text);
        answers.push(again.text);
    }
    // The same id with another body.
    let other = deliver(&lab, "d-1", &release("2.1.1", now_s()), SECRET).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", other.text);
    assert!(other.text.contains("X-Vesemir-Delivery"), "{}", other.text);

    // Signatures: wrong key, missing, malformed.
    let forged = deliver(&lab, "d-2", &release("6.6.6", now_s()), "not-the-secret-at-all").await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.text);
    assert_eq!(forged.headers["content-type"], "application/problem+json");
    let text = release("6.6.6", now_s()).to_string();
    let unsigned =
        post(&lab.loopback, "/v1/hooks/shop-ci", &text, &[("X-Vesemir-Delivery", "d-3".into())]).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED, "{}", unsigned.text);
    let garbled = post(
        &lab.loopback,
        "/v1/hooks/shop-ci",
        &text,
        &[("X-Vesemir-Signature", "sha256=zz".into()), ("X-Vesemir-Delivery", "d-4".into())],
    )
    .await;
    assert_eq!(garbled.status, StatusCode::UNAUTHORIZED, "{}", garbled.text);
    // A body changed after signing.
    let signature = sign(SECRET.as_bytes(), text.as_bytes());
    let tampered = text.replace("6.6.6", "6.6.7");
    let changed = post(
        &lab.loopback,
        "/v1/hooks/shop-ci",
        &tampered,
        &[("X-Vesemir-Signature", signature), ("X-Vesemir-Delivery", "d-5".into())],
    )
    .await;
    assert_eq!(changed.status, StatusCode::UNAUTHORIZED, "{}", changed.text);

    // Unknown hooks: 404, signed or not.
    for (path, key) in [("/v1/hooks/nope", SECRET), ("/v1/hooks/shop-cj", "x")] {
        let headers = [
            ("X-Vesemir-Signature", sign(key.as_bytes(), text.as_bytes())),
            ("X-Vesemir-Delivery", "d-6".to_owned()),
        ];
        let unknown = post(&lab.loopback, path, &text, &headers).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{path}: {}", unknown.text);
    }

    // Replays by time: a timestamp older (or later) than max_age, or none.
    for sent_at in [now_s() - 600, now_s() + 600] {
        let stale = deliver(&lab, &format!("d-stale-{sent_at}"), &release("2.2.0", sent_at), SECRET).await;
        assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.text);
        assert!(stale.text.contains("replay"), "{}", stale.text);
    }
    let undated = deliver(&lab, "d-undated", &json!({ "release": { "version": "2.2.0" } }), SECRET).await;
    assert_eq!(undated.status, StatusCode::UNAUTHORIZED, "{}", undated.text);
    let rfc3339 = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let dated =
        deliver(&lab, "d-rfc3339", &json!({ "release": { "version": "2.2.0" }, "sent_at": rfc3339 }), SECRET)
            .await;
    assert_eq!(dated.status, StatusCode::ACCEPTED, "{}", dated.text);
    wait_finished(&lab, dated.json["deployment"]["id"].as_i64().expect("an id")).await;

    // Payloads: not JSON, no version at the pointer, a version outside the unit's pattern, no
    // delivery id.
    let not_json = "{ nope";
    let headers = [
        ("X-Vesemir-Signature", sign(SECRET.as_bytes(), not_json.as_bytes())),
        ("X-Vesemir-Delivery", "d-7".into()),
    ];
    let malformed = post(&lab.loopback, "/v1/hooks/shop-ci", not_json, &headers).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{}", malformed.text);
    let missing = deliver(&lab, "d-8", &json!({ "release": {}, "sent_at": now_s() }), SECRET).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", missing.text);
    assert_eq!(missing.json["problems"][0]["field"], "version (/release/version)", "{}", missing.text);
    let bad = deliver(&lab, "d-9", &release("2.0.0; rm -rf /", now_s()), SECRET).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert!(bad.text.contains("^[0-9A-Za-z._+-]{1,64}$"), "the pattern is named: {}", bad.text);
    let text = release("2.3.0", now_s()).to_string();
    let anonymous = post(
        &lab.loopback,
        "/v1/hooks/shop-ci",
        &text,
        &[("X-Vesemir-Signature", sign(SECRET.as_bytes(), text.as_bytes()))],
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::BAD_REQUEST, "{}", anonymous.text);
    assert!(anonymous.text.contains("X-Vesemir-Delivery"), "{}", anonymous.text);

    // Nothing refused was deployed: two deployments in all.
    let list = lab.loopback.call("GET", "/v1/deployments", Some(ADMIN), None).await;
    let versions: Vec<&str> = list.json["deployments"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|d| d["version"].as_str())
        .collect();
    assert_eq!(versions, ["2.2.0", "2.1.0"], "{}", list.text);
    for answer in answers.iter().chain([&forged.text, &bad.text, &list.text]) {
        assert!(!answer.contains(SECRET), "the secret shows: {answer}");
    }
    assert!(lab.fleet.lb.out_of_rotation().is_empty());
    lab.loopback.stop().await;
    drop(lab.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_unit_queues_or_refuses_deliveries_as_the_hook_says() {
    let lab = start(Fleet::new(2)).await;
    lab.fleet.executor.set_latency(Duration::from_millis(400));
    // shop/production: one running by a person's token, a delivery waits and starts after it.
    let first = lab
        .loopback
        .call(
            "POST",
            "/v1/deployments",
            Some(PAYMENTS),
            Some(&lab.fleet.body("shop", "production", "payments").to_string()),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let first = first.json["id"].as_i64().expect("an id");
    let queued = release("3.0.0", now_s());
    let waiting = deliver(&lab, "q-1", &queued, SECRET).await;
    assert_eq!(waiting.status, StatusCode::ACCEPTED, "{}", waiting.text);
    assert_eq!(waiting.json["state"], "waiting", "{}", waiting.text);
    assert!(waiting.json.get("deployment").is_none(), "{}", waiting.text);
    assert!(!waiting.headers.contains_key("location"));
    // Repeated while it waits: still waiting, nothing started twice.
    let again = deliver(&lab, "q-1", &queued, SECRET).await;
    assert!(matches!(again.status, StatusCode::ACCEPTED | StatusCode::OK), "{}", again.text);
    let done = wait_finished(&lab, first).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Once the unit is free, the waiting delivery starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let list = lab
            .loopback
            .call("GET", "/v1/deployments?application=shop&environment=production", Some(ADMIN), None)
            .await;
        let hooked = list.json["deployments"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|d| d["requested_by"] == "hook:shop-ci")
            .and_then(|d| d["id"].as_i64());
        if let Some(id) = hooked {
            break id;
        }
        assert!(tokio::time::Instant::now() < deadline, "the waiting delivery never started: {}", list.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done = wait_finished(&lab, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["version"], "3.0.0");
    let repeated = deliver(&lab, "q-1", &queued, SECRET).await;
    assert_eq!(repeated.status, StatusCode::OK, "{}", repeated.text);
    assert_eq!(repeated.json["deployment"]["id"], id, "{}", repeated.text);

    // shop/staging refuses while busy (GitHub's header names).
    let running = lab
        .loopback
        .call(
            "POST",
            "/v1/deployments",
            Some(PAYMENTS),
            Some(&lab.fleet.body("shop", "staging", "payments").to_string()),
        )
        .await;
    assert_eq!(running.status, StatusCode::ACCEPTED, "{}", running.text);
    let text = json!({ "version": "3.1.0" }).to_string();
    let headers = [
        ("X-Hub-Signature-256", sign(SECRET.as_bytes(), text.as_bytes())),
        ("X-GitHub-Delivery", "gh-1".to_owned()),
    ];
    let refused = post(&lab.loopback, "/v1/hooks/shop-staging", &text, &headers).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.text.contains("busy"), "{}", refused.text);
    wait_finished(&lab, running.json["id"].as_i64().expect("an id")).await;
    // Sent again once the unit is free, the same delivery starts.
    let accepted = post(&lab.loopback, "/v1/hooks/shop-staging", &text, &headers).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert_eq!(accepted.json["state"], "started", "{}", accepted.text);
    let done = wait_finished(&lab, accepted.json["deployment"]["id"].as_i64().expect("an id")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    lab.loopback.stop().await;
}

#[tokio::test]
async fn a_secret_file_others_may_read_is_refused_and_hooks_are_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = config(&dir.path().join("v.db"));
    with_hooks(dir.path(), &mut settings);
    std::fs::set_permissions(dir.path().join("hook.secret"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let refused =
        Server::open(&settings, Arc::new(FixedPorts(Fleet::new(1).ports()))).await.expect_err("refused");
    let text = refused.to_string();
    assert!(text.contains("hooks[0].secret_file") && text.contains("chmod 600"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!format!("{settings:?}").contains(SECRET), "the config's Debug shows the secret");

    // Shape problems, every one at once.
    let text = format!(
        "database = \"v.db\"\n{}{PLAYBOOK}",
        units_toml().replacen(
            "[[units]]",
            "[[units]]\nhooks = [{ name = \"Bad Name\", secret_file = \"/x\", version = \"version\", max_age = \"0s\" }, { name = \"ok\", secret_file = \"/x\", version = \"/v\", delivery_header = \"bad header\" }, { name = \"ok\", secret_file = \"/x\", version = \"/v\" }]",
            1,
        )
    );
    let errors = ServerConfig::from_toml(&text).expect_err("invalid");
    let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "units[0].hooks[0].name",
            "units[0].hooks[0].version",
            "units[0].hooks[0].max_age",
            "units[0].hooks[1].delivery_header",
            "units[0].hooks[2].name",
        ],
        "{errors}"
    );
}
