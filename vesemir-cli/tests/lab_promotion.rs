//! CI to production on the local lab, under steady load through both backends' frontends: a
//! signed CI hook delivery deploys a version to `staging` (the lab's first two hosts, HAProxy
//! backend `be_lab`), whose success waits for a person's confirmation; `vesemir promote confirm`
//! deploys it to `production` (the other four, backend `be_lab_2` on the same HAProxy boxes),
//! all through `vesemir serve` over the real adapters (haproxy, sshd, goiardi), and not one
//! request fails.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::Served;
use serde_json::Value;
use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions, BACKEND, HAPROXY_TAG, SECOND_BACKEND};
use vesemir_testkit::process::free_port;

const SECRET: &str = "lab-hook-secret-0123456789abcdef";
const ADMIN: &str = "lab-admin-demo-token";

/// The lab's generated server configuration with its units replaced by `staging` (the first two
/// hosts, behind [`BACKEND`], hook `shop-ci`, promoting to `production` once confirmed) and
/// `production` (the others, behind [`SECOND_BACKEND`]).
fn serve(lab: &Lab) -> Served {
    let port = free_port();
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let head = text
        .split("[[units]]")
        .next()
        .expect("a head")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let secret = lab.dir().join("shop-ci.secret");
    std::fs::write(&secret, SECRET).expect("the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let hosts = |range: std::ops::Range<usize>| -> String {
        lab.hosts()[range]
            .iter()
            .map(|h| format!("{{ name = \"{}\", address = \"{}\" }}", h.name, h.address))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unit = |environment: &str, hosts: String, backend: &str, extra: &str| {
        format!(
            "[[units]]\nteam = \"lab\"\napplication = \"shop\"\nenvironment = \"{environment}\"\nplaybooks = [\"lab\"]\n\
             targets = {{ hosts = [{hosts}] }}\n\
             load_balancer = {{ backend = \"{backend}\", discover = {{ tags = [\"{HAPROXY_TAG}\"], port = {api} }}, drain_timeout = \"10s\" }}\n\
             strategy = {{ max_concurrency = 1, concurrency = 1 }}\n{extra}\n",
            api = lab.api_port(),
        )
    };
    let staging = unit(
        "staging",
        hosts(0..2),
        BACKEND,
        &format!(
            "promote_to = \"production\"\npromote_confirm = true\n[[units.hooks]]\nname = \"shop-ci\"\nsecret_file = \"{}\"\nversion = \"/version\"\n",
            secret.display()
        ),
    );
    let production = unit("production", hosts(2..lab.hosts().len()), SECOND_BACKEND, "");
    let server_config = lab.dir().join("vesemir-server-promotion.toml");
    std::fs::write(&server_config, format!("{head}{staging}{production}")).expect("server config");
    Served::start(lab.config_path(), lab.dir(), &server_config, port)
}

/// One HTTP/1.1 exchange: (status, JSON body).
fn http(served: &Served, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let address = served.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request
        .push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("writes");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads");
    let (head, text) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, serde_json::from_str(text).unwrap_or(Value::Null))
}

fn deployments(served: &Served, environment: &str) -> Vec<Value> {
    let path = format!("/v1/deployments?application=shop&environment={environment}");
    let (status, list) = http(served, "GET", &path, &[("Authorization", format!("Bearer {ADMIN}"))], "");
    assert_eq!(status, 200, "{list}");
    list["deployments"].as_array().cloned().unwrap_or_default()
}

/// Waits (at most 120 s) until `environment` has a deployment that has ended.
fn ended(served: &Served, environment: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(d) = deployments(served, environment).first() {
            if !matches!(d["status"].as_str(), Some("queued" | "running")) {
                return d.clone();
            }
        }
        assert!(Instant::now() < deadline, "{environment} never ended a deployment");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the `vesemir` binary against the server with the lab's admin token: (exit code, all
/// output).
fn vesemir(served: &Served, args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(args)
        .env("VESEMIR_SERVER", &served.url)
        .env("VESEMIR_TOKEN", ADMIN)
        .env_remove("VESEMIR_CONFIG")
        .output()
        .expect("runs vesemir");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

#[test]
fn a_ci_hook_deploys_staging_and_a_confirmed_promotion_deploys_production_on_its_own_backend_without_a_failed_request(
) {
    let lab = Lab::start(LabOptions { hosts: 6, second_backend: 4, ..LabOptions::default() })
        .expect("the lab starts");
    assert!(lab.hosts()[..2].iter().all(|h| h.backend == BACKEND));
    assert!(lab.hosts()[2..].iter().all(|h| h.backend == SECOND_BACKEND));
    let served = serve(&lab);
    // Through all four frontends: both boxes, both backends.
    assert_eq!(lab.frontends().len(), 4);
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(180),
        ..LoadOptions::default()
    });
    std::thread::sleep(Duration::from_millis(500));

    let body = r#"{"version":"2.0.0","ref":"refs/tags/v2.0.0"}"#;
    let headers = [
        ("X-Vesemir-Signature", vesemir_http::hooks::sign(SECRET.as_bytes(), body.as_bytes())),
        ("X-Vesemir-Delivery", "ci-run-1".to_owned()),
    ];
    let (status, accepted) = http(&served, "POST", "/v1/hooks/shop-ci", &headers, body);
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["state"], "started", "{accepted}");
    let staging = ended(&served, "staging");
    assert_eq!(staging["status"], "succeeded", "{staging}");
    assert_eq!(staging["requested_by"], "hook:shop-ci", "{staging}");
    let id = staging["id"].as_i64().expect("an id");

    // The success waits for a person: production untouched, on the old version.
    let (code, status) = vesemir(&served, &["status", &id.to_string()]);
    assert_eq!(code, Some(0), "{status}");
    assert!(status.contains("promotion to shop/production: waiting_confirmation"), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(deployments(&served, "production").is_empty());
    for host in &lab.hosts()[2..] {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some("1.0.0"), "{}", host.name);
    }

    // Confirmed from the command line: it deploys production and follows it to its end.
    let (code, confirmed) = vesemir(&served, &["promote", "confirm", &id.to_string()]);
    assert_eq!(code, Some(0), "{confirmed}");
    assert!(confirmed.contains("promotion to shop/production confirmed"), "{confirmed}");
    let production = ended(&served, "production");
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    assert_eq!(production["status"], "succeeded", "{production}");
    assert_eq!(production["version"], "2.0.0", "{production}");
    assert_eq!(production["requested_by"], "lab-oncall", "{production}");
    let (status, history) = http(
        &served,
        "GET",
        "/v1/applications/shop/environments/production/history",
        &[("Authorization", format!("Bearer {ADMIN}"))],
        "",
    );
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["deployments"][0]["promoted_from"], id.to_string(), "{history}");
    let (code, chain) = vesemir(&served, &["history", "shop", "staging"]);
    assert_eq!(code, Some(0), "{chain}");
    let promoted = production["id"].as_i64().expect("an id");
    assert!(
        chain.contains(&format!("promotion to shop/production: started (deployment {promoted})")),
        "{chain}"
    );
    for host in lab.hosts() {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some("2.0.0"), "{}", host.name);
        let states = lab.lb_status(&host.name).expect("HAProxy answers");
        assert!(states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100), "{states:?}");
    }
    assert_eq!(report.failed, 0, "{report}");
    assert!(report.by_version.get("2.0.0").is_some_and(|n| *n > 0), "{report}");
    // The same delivery again starts nothing new, and the promotion is decided once.
    let (status, again) = http(&served, "POST", "/v1/hooks/shop-ci", &headers, body);
    assert_eq!(status, 200, "{again}");
    let (code, twice) = vesemir(&served, &["promote", "confirm", &id.to_string()]);
    assert_ne!(code, Some(0), "{twice}");
    assert!(twice.contains("is started"), "{twice}");
    assert_eq!(deployments(&served, "staging").len(), 1);
    assert_eq!(deployments(&served, "production").len(), 1);
}
