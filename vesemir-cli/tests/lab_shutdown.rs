//! `vesemir serve` stopped by SIGTERM in the middle of a rollout on the local lab (real HAProxy
//! boxes, one sshd per host, steady traffic): admissions are refused with 503 while it stops,
//! the process exits 0 within the grace (plus the abort's bound), and every server HAProxy
//! really has out of rotation is recorded in the store and in the log; the next server puts
//! them back with `recover`.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Served;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};
use vesemir_testkit::process::free_port;

const TEAM: &str = "lab-team-demo-token";
const ADMIN: &str = "lab-admin-demo-token";

/// How long the stop waits for hosts in flight: shorter than the slowed step, so the hosts in
/// flight are aborted.
const GRACE: Duration = Duration::from_secs(2);

/// The lab's server configuration on `port`, its step slowed by 8 s (hosts stay in flight),
/// `shutdown_grace` [`GRACE`], the log in `serve.log`.
fn serve(lab: &Lab, port: u16) -> Served {
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let text = text
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("run = \"bash ", "run = \"sleep 8 && bash ");
    let text = format!("{text}\n[limits]\nshutdown_grace = \"{}s\"\n", GRACE.as_secs());
    let server_config = lab.dir().join("vesemir-server-shutdown.toml");
    std::fs::write(&server_config, text).expect("server config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.dir().join("serve.log"))
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .arg("--config")
        .arg(lab.config_path())
        .arg("serve")
        .arg("--server-config")
        .arg(&server_config)
        .current_dir(lab.dir())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starts vesemir serve");
    Served::listening(child, port)
}

/// One HTTP/1.1 exchange: the status, the head and the body.
fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> Option<(u16, String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// Deployment `id` as the server shows it; `Null` while it does not exist yet.
fn deployment(port: u16, id: i64) -> serde_json::Value {
    let (status, _, body) = http(port, "GET", &format!("/v1/deployments/{id}"), ADMIN, "").expect("answers");
    if status == 404 {
        return serde_json::Value::Null;
    }
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

#[test]
fn sigterm_mid_rollout_refuses_admissions_exits_within_the_grace_and_records_every_server_out() {
    let lab =
        Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts");
    let port = free_port();
    let mut served = serve(&lab, port);
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(120),
        ..LoadOptions::default()
    });
    let deploy_file = lab.deploy_path().display().to_string();
    let follower = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["deploy", "-f", &deploy_file])
        .current_dir(lab.dir())
        .env("VESEMIR_SERVER", &served.url)
        .env("VESEMIR_TOKEN", TEAM)
        .env_remove("VESEMIR_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs vesemir deploy");

    // Mid-rollout: a host is in its (slow) step, out of rotation on both HAProxy boxes.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let d = deployment(port, 1);
        let in_step =
            d["hosts"].as_array().is_some_and(|hosts| hosts.iter().any(|h| h["phase"] == "step 1 (install)"));
        if in_step && !lab.out_of_rotation().expect("HAProxy answers").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no host reached its step: {d}");
        std::thread::sleep(Duration::from_millis(50));
    }

    served.signal_term();
    let signalled = Instant::now();
    // While it stops, a new deployment is refused with 503 and Retry-After.
    let body = r#"{"application":"shop","environment":"lab","team":"lab","version":"3.0.0"}"#;
    let mut refused = None;
    while refused.is_none() && signalled.elapsed() < GRACE {
        match http(port, "POST", "/v1/deployments", TEAM, body) {
            Some((503, head, body)) => refused = Some((head, body)),
            // Before the server has taken the signal in, the unit is still busy: refused too
            // (never admitted); asked again until the stop answers.
            Some((409, _, _)) => std::thread::sleep(Duration::from_millis(20)),
            Some((status, _, body)) => panic!("a POST during the stop got {status}: {body}"),
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let (head, problem) = refused.expect("a POST during the stop is answered 503");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("retry-after: 30"), "{head}");
    assert!(head.contains("content-type: application/problem+json"), "{head}");
    assert!(problem.contains("shutting down"), "{problem}");

    // It exits 0 within the grace plus the abort's bound (10 s) and the listener's (5 s).
    let status = served.wait_exit(GRACE + Duration::from_secs(15)).expect("vesemir serve exits in time");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status");
    eprintln!("stop took {took:?} with a grace of {GRACE:?}");
    let output = follower.wait_with_output().expect("the follower ends");
    let report = traffic.finish().expect("the load generator reports");

    // Every server HAProxy really has out of rotation is in the record and in the log.
    let mut out = lab.out_of_rotation().expect("HAProxy answers");
    out.sort();
    assert!(!out.is_empty(), "the aborted host in flight is still out");
    let port = free_port();
    let served = serve(&lab, port);
    let record = deployment(port, 1);
    assert_eq!(record["status"], "interrupted", "{record}");
    let recorded: Vec<String> = serde_json::from_value(record["out_of_rotation"].clone()).expect("a list");
    for server in &out {
        assert!(recorded.contains(server), "{server} is out on HAProxy but not recorded: {record}");
    }
    assert_eq!(recorded, out, "the record names exactly the servers out: {record}");
    eprintln!("out of rotation on HAProxy: {out:?}; recorded: {recorded:?}");
    let log = std::fs::read_to_string(lab.dir().join("serve.log")).expect("the log");
    let line = log
        .lines()
        .find(|l| l.contains("aborted at shutdown past the grace"))
        .unwrap_or_else(|| panic!("no abort line in the log:\n{log}"));
    for server in &out {
        assert!(line.contains(&format!("\"{server}\"")), "{server} not in the log line: {line}");
    }
    assert_eq!(report.failed, 0, "no request failed: {report}\n{}", String::from_utf8_lossy(&output.stderr));

    // The next server puts them back from the record.
    let (status, _, body) =
        http(port, "POST", "/v1/deployments/1/recover", TEAM, "").expect("recover answers");
    assert_eq!(status, 200, "{body}");
    lab.wait_all_up(Duration::from_secs(30)).expect("every server is back");
    drop(served);
}
