//! `vesemir vm ...` against a stub of the server's VM routes (a plain HTTP/1.1 responder on a
//! loopback port that answers canned bodies and records each request): what each command asks,
//! what it prints, and its exit code. The real server, on the lab, is `tests/lab_vm.rs`.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// One request the stub got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    last_event_id: Option<String>,
    body: String,
}

/// An answer: status, content type, body.
type Answer = (u16, &'static str, String);

/// A stub server answering with `route(request, the requests before it)`.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    fn start(route: impl Fn(&Seen, &[Seen]) -> Answer + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut words = line.split_whitespace();
                let method = words.next().unwrap_or_default().to_owned();
                let path = words.next().unwrap_or_default().to_owned();
                let (mut length, mut last_event_id) = (0usize, None);
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "last-event-id" => last_event_id = Some(value.trim().to_owned()),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let request =
                    Seen { method, path, last_event_id, body: String::from_utf8_lossy(&body).into_owned() };
                let before = log.lock().unwrap().clone();
                let (status, content_type, body) = route(&request, &before);
                log.lock().unwrap().push(request);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn vesemir(stub: &Stub, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(args)
        .env("VESEMIR_SERVER", &stub.url)
        .env("VESEMIR_TOKEN", "t")
        .env_remove("VESEMIR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn view(status: &str) -> Value {
    let mut view = json!({
        "name": "alice-1", "owner": "alice", "team": "dev", "flavor": "small", "status": status,
        "fqdn": "alice-1.lab.test", "address": "127.55.0.30", "hypervisor": "hv-1",
        "requested_by": "dev-ci", "created_at": "2026-12-01T10:00:00Z",
        "links": { "self": "/v1/vms/alice-1", "events": "/v1/vms/alice-1/events", "page": "/vms/alice-1" },
    });
    if status == "ready" {
        view["ssh_host_key"] = json!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLxKey");
        view["login"] = json!("ssh alice@alice-1.lab.test");
    }
    view
}

fn sse(events: &[Value], first_id: u64) -> String {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| format!("event: provision\nid: {}\ndata: {e}\n\n", first_id + i as u64))
        .collect()
}

fn started(mode: &str, at: &str) -> Value {
    json!({ "seq": 1, "elapsed": at, "type": "started", "mode": mode, "vm": "alice-1", "fqdn": "alice-1.lab.test",
            "flavor": { "name": "small", "cores": 1, "memory_mib": 256, "disk_gib": 1 } })
}

fn step(kind: &str, step: &str, at: &str) -> Value {
    json!({ "seq": 1, "elapsed": at, "type": kind, "step": step })
}

fn create_events() -> Vec<Value> {
    vec![
        started("create", "0s"),
        step("step_started", "reserve", "0s"),
        json!({ "seq": 3, "elapsed": "10ms", "type": "placed", "placement": { "hypervisor": "hv-1", "address": "127.55.0.30" } }),
        step("step_done", "reserve", "20ms"),
        step("step_started", "bootstrap", "20ms"),
        json!({ "seq": 6, "elapsed": "1s", "type": "output", "step": "bootstrap", "stream": "stdout", "text": "node_name alice-1.lab.test" }),
        step("step_done", "bootstrap", "2s"),
        json!({ "seq": 8, "elapsed": "3s", "type": "finished", "outcome": { "result": "ready", "record": {
            "vm": "alice-1", "fqdn": "alice-1.lab.test",
            "flavor": { "name": "small", "cores": 1, "memory_mib": 256, "disk_gib": 1 },
            "placement": { "hypervisor": "hv-1", "address": "127.55.0.30" },
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLxKey", "environment": "production", "run_list": [] } } }),
    ]
}

const JSON: &str = "application/json";
const EVENTS: &str = "text/event-stream";

#[test]
fn create_follows_the_steps_and_ends_with_how_to_log_in() {
    let stub = Stub::start(|request, _| match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/vms") => (202, JSON, view("creating").to_string()),
        ("GET", "/v1/vms/alice-1/events") => (200, EVENTS, sse(&create_events(), 1)),
        ("GET", "/v1/vms/alice-1") => (200, JSON, view("ready").to_string()),
        _ => (404, JSON, "{}".into()),
    });
    let output = vesemir(&stub, &["vm", "create", "--owner", "alice", "--flavor", "small"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    for says in [
        "reserve: reserving an address and a hypervisor slot",
        "placed on hypervisor hv-1 at 127.55.0.30",
        "bootstrap | node_name alice-1.lab.test",
        "bootstrap: done in 2.0s",
        "VM alice-1 is ready in 3.0s",
        "DNS name:    alice-1.lab.test",
        "log in:      ssh alice@alice-1.lab.test",
        "known_hosts: alice-1.lab.test,127.55.0.30 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLxKey",
        "steps:       reserve 0.0s, bootstrap 2.0s",
    ] {
        assert!(out.contains(says), "{says}:\n{out}");
    }
    let seen = stub.seen();
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, json!({ "owner": "alice", "flavor": "small" }));

    // JSON: stdout holds the VM as the API shows it, the progress goes to stderr.
    let output = vesemir(
        &stub,
        &["vm", "create", "--owner", "alice", "--flavor", "small", "--name", "alice-1", "-o", "json"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stdout, view("ready"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bootstrap: done"));
    let body: Value = serde_json::from_str(&stub.seen()[3].body).unwrap();
    assert_eq!(body["name"], "alice-1");
}

#[test]
fn a_failed_create_exits_1_naming_the_step_and_reason_and_a_refusal_exits_2_naming_the_field() {
    let stub = Stub::start(|request, _| {
        match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/vms") if request.body.contains("nobody") => (
            422,
            "application/problem+json",
            json!({ "title": "Unprocessable Entity", "status": 422, "detail": "the request is not valid",
                    "problems": [{ "field": "owner", "message": "\"nobody\" is not a user of the directory" }] })
            .to_string(),
        ),
        ("POST", "/v1/vms") => (202, JSON, view("creating").to_string()),
        ("GET", "/v1/vms/alice-1/events") => (
            200,
            EVENTS,
            sse(
                &[
                    started("create", "0s"),
                    step("step_started", "dns", "0s"),
                    json!({ "seq": 3, "elapsed": "1s", "type": "step_failed", "step": "dns", "reason": "TSIG key refused", "partial": false }),
                    json!({ "seq": 4, "elapsed": "1s", "type": "undo_started", "step": "reserve", "attempt": 1 }),
                    step("undo_done", "reserve", "1100ms"),
                    json!({ "seq": 6, "elapsed": "1100ms", "type": "finished", "outcome": { "result": "failed", "step": "dns", "reason": "TSIG key refused", "left_behind": [] } }),
                ],
                1,
            ),
        ),
        ("GET", "/v1/vms/alice-1") => {
            let mut failed = view("failed");
            failed["failure"] = json!({ "step": "dns", "reason": "TSIG key refused" });
            (200, JSON, failed.to_string())
        }
        _ => (404, JSON, "{}".into()),
    }
    });
    let output = vesemir(&stub, &["vm", "create", "--owner", "alice", "--flavor", "small"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    for says in [
        "dns: FAILED after 1.0s: TSIG key refused",
        "undo reserve: releasing the address and the hypervisor slot",
        "VM alice-1 FAILED in 1.1s: step dns failed: TSIG key refused",
        "nothing is left",
    ] {
        assert!(out.contains(says), "{says}:\n{out}");
    }

    let output = vesemir(&stub, &["vm", "create", "--owner", "nobody", "--flavor", "small"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("owner: \"nobody\" is not a user of the directory"), "{out}");

    // Refused here before any request: a flavor or a name that cannot be one.
    let calls = stub.seen().len();
    let output =
        vesemir(&stub, &["vm", "create", "--owner", "alice", "--flavor", "small", "--name", "Alice_1"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("invalid VM name"), "{}", text(&output));
    assert_eq!(stub.seen().len(), calls, "nothing was asked");
}

#[test]
fn destroy_asks_for_yes_off_a_terminal_then_follows_only_its_own_events() {
    let stub = Stub::start(|request, before| {
        let destroying = before.iter().any(|s| s.method == "DELETE");
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/v1/vms/alice-1/events") if destroying => {
                let events = [
                    started("destroy", "0s"),
                    json!({ "seq": 2, "elapsed": "0s", "type": "undo_started", "step": "chef", "attempt": 1 }),
                    step("undo_done", "chef", "300ms"),
                    json!({ "seq": 4, "elapsed": "2s", "type": "finished", "outcome": { "result": "destroyed", "left_behind": [] } }),
                ];
                (200, EVENTS, sse(&events, 9))
            }
            ("GET", "/v1/vms/alice-1/events") => (200, EVENTS, sse(&create_events(), 1)),
            ("GET", "/v1/vms/alice-1") if destroying => (200, JSON, view("destroyed").to_string()),
            ("GET", "/v1/vms/alice-1") => (200, JSON, view("ready").to_string()),
            ("DELETE", "/v1/vms/alice-1") => (202, JSON, view("destroying").to_string()),
            _ => (404, JSON, "{}".into()),
        }
    });
    let output = vesemir(&stub, &["vm", "destroy", "alice-1"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("pass --yes"), "{out}");
    assert!(stub.seen().is_empty(), "nothing asked without --yes: {:?}", stub.seen());

    let output = vesemir(&stub, &["vm", "destroy", "alice-1", "--yes"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("undo chef: deleting the Chef node and client"), "{out}");
    assert!(out.contains("VM alice-1 destroyed in 2.0s"), "{out}");
    assert!(!out.contains("bootstrap"), "the create's events are not shown again: {out}");
    let seen = stub.seen();
    let delete = seen.iter().position(|s| s.method == "DELETE").unwrap();
    let follow = &seen[delete + 1];
    assert_eq!(follow.path, "/v1/vms/alice-1/events");
    assert_eq!(follow.last_event_id.as_deref(), Some("8"), "after the events stored before");
}

#[test]
fn list_and_show_print_the_api_bodies_as_json_and_exit_by_status() {
    let stub = Stub::start(|request, _| match (request.method.as_str(), request.path.as_str()) {
        ("GET", path) if path.starts_with("/v1/vms?") => {
            (200, JSON, json!({ "vms": [view("ready"), view("failed")] }).to_string())
        }
        ("GET", "/v1/vms/alice-1") => (200, JSON, view("interrupted").to_string()),
        ("GET", "/v1/vms/ghost") => (
            404,
            "application/problem+json",
            json!({ "title": "Not Found", "status": 404, "detail": "no VM ghost" }).to_string(),
        ),
        _ => (404, JSON, "{}".into()),
    });
    let output = vesemir(&stub, &["vm", "list", "--owner", "alice", "--status", "ready", "-o", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list["vms"].as_array().unwrap().len(), 2);
    let query = &stub.seen()[0].path;
    assert!(query.contains("owner=alice") && query.contains("status=ready"), "{query}");

    let output = vesemir(&stub, &["vm", "list"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 3);

    let output = vesemir(&stub, &["vm", "show", "alice-1"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "interrupted: {out}");
    assert!(out.contains("next:        vesemir vm destroy alice-1"), "{out}");

    let output = vesemir(&stub, &["vm", "show", "ghost", "-o", "json"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("no VM ghost"));

    let output = vesemir(&stub, &["vm", "list", "--status", "sleeping"]);
    assert_eq!(output.status.code(), Some(2));

    let output = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["vm", "show", "alice-1", "--server", "http://127.0.0.1:1"])
        .env_remove("VESEMIR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "unreachable: {}", text(&output));
}

#[test]
fn ctrl_c_stops_following_and_says_how_to_go_on() {
    // The server's run goes on: its stream ends without a `finished` event, the VM is creating.
    let stub = Stub::start(|request, _| match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/vms") => (202, JSON, view("creating").to_string()),
        ("GET", "/v1/vms/alice-1/events") if request.last_event_id.is_none() => {
            (200, EVENTS, sse(&create_events()[..2], 1))
        }
        ("GET", "/v1/vms/alice-1/events") => (200, EVENTS, String::new()),
        ("GET", "/v1/vms/alice-1") => (200, JSON, view("creating").to_string()),
        _ => (404, JSON, "{}".into()),
    });
    let child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["vm", "create", "--owner", "alice", "--flavor", "small"])
        .env("VESEMIR_SERVER", &stub.url)
        .env_remove("VESEMIR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !stub.seen().iter().any(|s| s.last_event_id.as_deref() == Some("2")) {
        assert!(
            std::time::Instant::now() < deadline,
            "it follows again after the stream ended: {:?}",
            stub.seen()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("reserve: reserving an address"), "{out}");
    assert!(out.contains("stopped following VM alice-1: the server goes on with it"), "{out}");
    assert!(out.contains("vesemir vm cancel alice-1"), "{out}");
}
