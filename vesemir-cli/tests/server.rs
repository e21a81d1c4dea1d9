//! Client mode against `vesemir serve`: the server runs deployments over the same real haproxy
//! and sshd; the CLI submits, follows, reads status, lists and authenticates.

mod common;

use std::process::{Command, Stdio};

use common::{text, Lab, Served, HOSTS, PLAYBOOK};
use vesemir_core::ports::ServerStatus;
use vesemir_testkit::process::free_port;

const TOKEN: &str = "test-token-for-the-web-team";

fn serve(lab: &Lab) -> Served {
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\n\n[[tokens]]\nname = \"web-ci\"\nsha256 = \"{hash}\"\nteam = \"web\"\n\n{PLAYBOOK}\n{unit}",
        db = lab.dir.path().join("vesemir.db").display(),
        hash = vesemir_http::auth::sha256_hex(TOKEN.as_bytes()),
        unit = lab.unit(),
    );
    std::fs::write(lab.dir.path().join("vesemir-server.toml"), config).expect("server config");
    let child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .arg("serve")
        .current_dir(lab.dir.path())
        .env_remove("VESEMIR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts vesemir serve");
    Served::listening(child, port)
}

fn client(lab: &Lab, served: &Served, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
    command
        .args(args)
        .current_dir(lab.dir.path())
        .env("VESEMIR_SERVER", &served.url)
        .env_remove("VESEMIR_CONFIG");
    match token {
        Some(token) => command.env("VESEMIR_TOKEN", token),
        None => command.env_remove("VESEMIR_TOKEN"),
    };
    command.output().expect("runs vesemir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_through_the_server_then_status_list_and_logs() {
    let lab = Lab::start();
    let served = serve(&lab);

    let output =
        client(&lab, &served, Some(TOKEN), &["deploy", "-f", "deploy.toml", "--set", "version=3.1.0"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("deployment 1 accepted for web-ci"), "{all}");
    assert!(
        all.contains(
            "not sent to the server, whose catalog sets them for web/shop/test: targets, load_balancer"
        ),
        "{all}"
    );
    assert!(all.contains("web-3: deployed, in rotation"), "{all}");
    assert!(all.contains("deployment 1: shop 3.1.0 to test (team web), asked by web-ci: succeeded"), "{all}");
    for host in HOSTS {
        assert_eq!(lab.version_on(host).as_deref(), Some("3.1.0"), "{host}");
        assert!(lab.status(host).await.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100), "{host}");
    }

    let status = client(&lab, &served, Some(TOKEN), &["status", "1"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains("3 succeeded, 0 failed"), "{}", text(&status));

    let list = client(&lab, &served, Some(TOKEN), &["list", "--app", "shop"]);
    let listed = text(&list);
    assert!(listed.contains("shop") && listed.contains("3.1.0") && listed.contains("succeeded"), "{listed}");

    let logs = client(&lab, &served, Some(TOKEN), &["logs", "1"]);
    let logged = text(&logs);
    assert!(logged.contains("batch 1: web-1, web-2, web-3"), "{logged}");
    assert!(logged.contains("deployment succeeded: 3 succeeded"), "{logged}");

    // JSON for machines: status, list and history.
    let status = client(&lab, &served, Some(TOKEN), &["status", "1", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status -o json is JSON");
    assert_eq!(json["deployment"]["status"], "succeeded", "{json}");
    let list = client(&lab, &served, Some(TOKEN), &["list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&list.stdout).expect("list -o json is JSON");
    assert_eq!(json["deployments"][0]["version"], "3.1.0", "{json}");

    // A second version, then a rollback through the server: every host back on 3.1.0, and the
    // history says which deployment it rolled back.
    let second =
        client(&lab, &served, Some(TOKEN), &["deploy", "-f", "deploy.toml", "--set", "version=3.2.0"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let rolled = client(&lab, &served, Some(TOKEN), &["rollback", "shop", "test"]);
    let all = text(&rolled);
    assert_eq!(rolled.status.code(), Some(0), "{all}");
    assert!(all.contains("deployment 3: shop 3.1.0 to test"), "{all}");
    for host in HOSTS {
        assert_eq!(lab.version_on(host).as_deref(), Some("3.1.0"), "{host}");
    }
    let history = client(&lab, &served, Some(TOKEN), &["history", "shop", "test", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history -o json is JSON");
    assert_eq!(json["deployments"][0]["rollback_of"], "2", "{json}");
    assert_eq!(json["hosts"]["web-1"]["version"], "3.1.0", "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_a_missing_token_and_names_bad_fields() {
    let lab = Lab::start();
    let served = serve(&lab);
    let output = client(&lab, &served, None, &["deploy", "-f", "deploy.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("401") && all.contains("set VESEMIR_TOKEN"), "{all}");

    let output = client(
        &lab,
        &served,
        Some(TOKEN),
        &["deploy", "-f", "deploy.toml", "--set", "strategy.concurrency=0"],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("strategy.concurrency: must be at least 1"), "{all}");
    assert!(lab.version_on("web-1").is_none(), "nothing deployed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_confirm_and_resume_a_server_deployment_from_another_process() {
    let lab = Lab::start();
    let served = serve(&lab);
    let deploy = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["deploy", "-f", "deploy.toml", "--set", "version=4.0.0"])
        .args(["--set", "strategy.canary.hosts=1", "--set", "strategy.canary.confirm=true"])
        .current_dir(lab.dir.path())
        .env("VESEMIR_SERVER", &served.url)
        .env("VESEMIR_TOKEN", TOKEN)
        .env_remove("VESEMIR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts the deploy");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = client(&lab, &served, Some(TOKEN), &["status", "1"]);
        if text(&status).contains("the canary waits for confirmation: `vesemir confirm --server URL 1`") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the canary never waited: {}", text(&status));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let paused = client(&lab, &served, Some(TOKEN), &["pause", "1"]);
    assert_eq!(paused.status.code(), Some(0), "{}", text(&paused));
    let status = client(&lab, &served, Some(TOKEN), &["status", "1"]);
    assert!(text(&status).contains("PAUSED: no new host starts"), "{}", text(&status));
    let confirmed = client(&lab, &served, Some(TOKEN), &["confirm", "1"]);
    assert_eq!(confirmed.status.code(), Some(0), "{}", text(&confirmed));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(lab.version_on("web-2"), None, "confirmed while paused: nothing starts before the resume");
    let resumed = client(&lab, &served, Some(TOKEN), &["resume", "1"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let not_local = client(&lab, &served, Some(TOKEN), &["resume", "20250101T000000Z-1"]);
    assert_eq!(not_local.status.code(), Some(2), "{}", text(&not_local));
    let output = deploy.wait_with_output().expect("the deploy ends");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("paused: no new host starts until resumed"), "{all}");
    assert!(all.contains("resumed: hosts start again"), "{all}");
    for host in HOSTS {
        assert_eq!(lab.version_on(host).as_deref(), Some("4.0.0"), "{host}");
    }
}

#[test]
fn config_check_reports_every_problem_of_the_servers_catalog_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = "database = \"v.db\"\n\n[playbooks.web]\nsteps = [{ name = \"i\", run = \"install {version}\" }]\n\n\
        [[units]]\nteam = \"web\"\napplication = \"shop\"\nenvironment = \"test\"\nplaybooks = [\"deploy\"]\n\
        targets = { query = \"name:*\" }\nload_balancer = { backend = \"be_web\", instances = [{ socket = \"/run/h.sock\" }] }\n\
        version = \"([\"\n";
    std::fs::write(dir.path().join("server.toml"), text).expect("config");
    let output = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["config", "check", "--server-config", "server.toml"])
        .current_dir(dir.path())
        .env_remove("VESEMIR_CONFIG")
        .output()
        .expect("runs vesemir");
    let all = text_of(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    for field in ["units[0].version", "units[0].playbooks[0]", "units[0].targets.query"] {
        assert!(all.contains(field), "{field} missing: {all}");
    }
}

fn text_of(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
