//! Notifications: a test receiver gets `started` and `succeeded`, signed, in order; a receiver
//! that is down gets its attempts retried and recorded; one that never answers does not slow the
//! rollout.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vesemir_http::notify::NotifyConfig;

const SECRET: &str = "notify-secret-0123456789abcdef";

/// A receiver on a loopback port: records each request (headers and body) and answers 200, or
/// never answers when `hang`.
async fn receiver(hang: bool) -> (u16, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = listener.local_addr().expect("address").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            if hang {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            record.lock().expect("lock").push((head.to_ascii_lowercase(), body.to_owned()));
                            let _ = stream
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                )
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, seen)
}

fn target(name: &str, port: u16, secret: Option<&std::path::Path>, attempts: u32) -> NotifyConfig {
    let mut text =
        format!("name = \"{name}\"\nurl = \"http://127.0.0.1:{port}/hook\"\nattempts = {attempts}\n");
    if let Some(path) = secret {
        text.push_str(&format!("secret_file = \"{}\"\n", path.display()));
    }
    toml::from_str(&text).expect("a notify target")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_signed_notifications_and_a_dead_or_hanging_one_slows_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("notify.secret");
    std::fs::write(&secret, SECRET).expect("writes");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (good, seen) = receiver(false).await;
    let (hanging, _) = receiver(true).await;
    let down = vesemir_testkit::process::free_port();
    let (secret_path, slack) = (secret.clone(), receiver(false).await);
    let t = TestServer::start_with(Fleet::new(2), move |config| {
        for unit in &mut config.units {
            if unit.application == "shop" && unit.environment == "production" {
                let mut chat = target("chat", slack.0, None, 1);
                chat.format = vesemir_http::notify::NotifyFormat::Slack;
                chat.events = vec![vesemir_http::notify::NotifyEvent::Succeeded];
                unit.notify = vec![
                    target("ci", good, Some(&secret_path), 3),
                    target("down", down, None, 3),
                    target("hangs", hanging, None, 1),
                    chat,
                ];
            }
        }
    })
    .await;
    let slack_seen = slack.1;
    let started = Instant::now();
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    let done = t.wait_finished(id).await;
    let took = started.elapsed();
    assert_eq!(done["status"], "succeeded", "{done}");
    // The receiver that never answers holds each attempt 5 s, and the dead one is retried over
    // 1.5 s: the rollout waited for neither.
    assert!(took < Duration::from_secs(3), "the rollout took {took:?}");

    let deadline = Instant::now() + Duration::from_secs(15);
    let bodies = loop {
        let got: Vec<(String, String)> = seen.lock().expect("lock").clone();
        if got.len() >= 2 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events: Vec<String> = bodies
        .iter()
        .map(|(_, body)| {
            serde_json::from_str::<Value>(body).expect("json")["event"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(events, ["started", "succeeded"], "{bodies:?}");
    for (head, body) in &bodies {
        let signature = vesemir_http::hooks::sign(SECRET.as_bytes(), body.as_bytes());
        assert!(head.contains(&format!("x-vesemir-signature: {signature}")), "unsigned: {head}");
        assert!(!head.contains(SECRET) && !body.contains(SECRET));
    }
    let last: Value = serde_json::from_str(&bodies[1].1).expect("json");
    assert_eq!(last["deployment"]["id"], id);
    assert_eq!(last["deployment"]["status"], "succeeded");
    assert_eq!(last["deployment"]["version"], "2.0.0");
    let chat: Vec<String> = slack_seen.lock().expect("lock").iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(chat.len(), 1, "{chat:?}");
    let text: Value = serde_json::from_str(&chat[0]).expect("json");
    assert!(
        text["text"]
            .as_str()
            .is_some_and(|t| t.contains("shop 2.0.0 to production") && t.contains("succeeded")),
        "{text}"
    );

    // The dead receiver: every attempt of both events recorded, none delivered.
    let store = vesemir_http::SqliteStore::open(&t.dir.path().join("vesemir.db")).await.expect("opens");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = vesemir_http::Store::notifications(&store, id).await.expect("reads");
        let dead: Vec<_> = log.iter().filter(|a| a.target == "down").collect();
        let delivered: Vec<_> = log.iter().filter(|a| a.target == "ci" && a.delivered).collect();
        if dead.len() == 6 && delivered.len() == 2 {
            assert!(
                dead.iter()
                    .all(|a| !a.delivered && a.error.as_deref().is_some_and(|e| e.contains("connect"))),
                "{dead:?}"
            );
            let attempts: Vec<i64> = dead.iter().map(|a| a.attempt).collect();
            assert_eq!(attempts.iter().filter(|a| **a == 3).count(), 2, "{attempts:?}");
            assert!(
                log.iter().all(|a| a.error.as_deref().is_none_or(|e| !e.contains("127.0.0.1:"))),
                "a URL was recorded: {log:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the delivery log never had every attempt: {log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The delivery log through the API: the dead receiver's three attempts per event, by name
    // only; another team's deployment is not found.
    let path = format!("/v1/deployments/{id}/notifications");
    let log = t.get(PAYMENTS, &path).await;
    assert_eq!(log.status, axum::http::StatusCode::OK, "{}", log.text);
    assert_eq!(log.json["id"], id);
    let deliveries = log.json["deliveries"].as_array().expect("deliveries");
    let dead: Vec<(String, i64)> = deliveries
        .iter()
        .filter(|d| d["target"] == "down")
        .map(|d| (d["event"].as_str().unwrap_or("").to_owned(), d["attempt"].as_i64().unwrap_or(0)))
        .collect();
    let expected: Vec<(String, i64)> =
        ["started", "succeeded"].iter().flat_map(|e| (1..=3).map(move |n| ((*e).to_owned(), n))).collect();
    assert_eq!(dead, expected, "{}", log.text);
    for d in deliveries.iter().filter(|d| d["target"] == "down") {
        assert_eq!(d["delivered"], false, "{d}");
        assert!(
            d["http_status"].is_null() && d["error"].as_str().is_some_and(|e| e.contains("connect")),
            "{d}"
        );
        assert!(d["at"].as_str().is_some_and(|a| a.ends_with('Z')), "{d}");
    }
    assert!(deliveries
        .iter()
        .any(|d| d["target"] == "ci" && d["delivered"] == true && d["http_status"] == 200));
    for hidden in [SECRET, "127.0.0.1", "/hook", "http://"] {
        assert!(!log.text.contains(hidden), "the log shows {hidden}: {}", log.text);
    }
    let other = t.get(SEARCH, &path).await;
    assert_eq!(other.status, axum::http::StatusCode::NOT_FOUND, "{}", other.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_waiting_for_confirmation_is_notified_to_both_units() {
    let (staging_port, staging_seen) = receiver(false).await;
    let (production_port, production_seen) = receiver(false).await;
    let t = TestServer::start_with(Fleet::new(1), move |config| {
        for unit in &mut config.units {
            match (unit.application.as_str(), unit.environment.as_str()) {
                ("shop", "staging") => {
                    unit.promote_to = Some("production".into());
                    unit.promote_confirm = true;
                    let mut chat = target("chat", staging_port, None, 1);
                    chat.events = vec![vesemir_http::notify::NotifyEvent::WaitingForConfirmation];
                    unit.notify = vec![chat];
                }
                ("shop", "production") => {
                    let mut chat = target("prod-chat", production_port, None, 1);
                    chat.format = vesemir_http::notify::NotifyFormat::Slack;
                    chat.events = vec![vesemir_http::notify::NotifyEvent::WaitingForConfirmation];
                    unit.notify = vec![chat];
                }
                _ => {}
            }
        }
    })
    .await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "staging", "payments")).await);
    let done = t.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while staging_seen.lock().expect("lock").is_empty() || production_seen.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "the waiting promotion was not notified to both units");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = staging_seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (head, body) = &got[0];
    assert!(head.contains(&format!("x-vesemir-delivery: {id}-promotion-waiting_for_confirmation")), "{head}");
    let body: Value = serde_json::from_str(body).expect("json");
    assert_eq!(body["event"], "waiting_for_confirmation", "{body}");
    assert_eq!(body["deployment"]["status"], "succeeded", "{body}");
    assert_eq!(body["promotion"]["to"], "shop/production", "{body}");
    assert_eq!(body["promotion"]["confirm"], format!("/v1/deployments/{id}/promotion/confirm"), "{body}");
    let slack = production_seen.lock().expect("lock").clone();
    let text: Value = serde_json::from_str(&slack[0].1).expect("json");
    assert!(
        text["text"].as_str().is_some_and(|t| t.contains("promotion to shop/production")
            && t.contains(&format!("vesemir promote confirm {id}"))),
        "{text}"
    );
    let log = t.get(PAYMENTS, &format!("/v1/deployments/{id}/notifications")).await;
    let events: Vec<&str> = log.json["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter_map(|d| d["event"].as_str())
        .collect();
    assert_eq!(events, ["waiting_for_confirmation", "waiting_for_confirmation"], "{}", log.text);
}

#[test]
fn notify_targets_are_checked() {
    let text = format!(
        "database = \"v.db\"\n{}{PLAYBOOK}",
        units_toml().replacen(
            "[[units]]",
            "[[units]]\nnotify = [{ name = \"a\", url = \"ftp://x\" }, { name = \"a\", url = \"http://x/\", attempts = 0 }]",
            1,
        )
    );
    let errors = vesemir_http::ServerConfig::from_toml(&text).expect_err("invalid");
    let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["units[0].notify[0].url", "units[0].notify[1].name", "units[0].notify[1].attempts"],
        "{errors}"
    );
}
