//! End to end through the HTTP server on the local lab, under steady load: `vesemir serve` runs
//! the deployments over the real adapters; the CLI submits and follows them in client mode.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Served;
use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};
use vesemir_testkit::process::free_port;

const TOKEN: &str = "lab-team-demo-token";

/// Starts the server with the lab's generated two-team configuration (team `lab` deploys
/// `shop`), on a free port.
fn serve(lab: &Lab) -> Served {
    let port = free_port();
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let server_config = lab.dir().join("vesemir-server-test.toml");
    std::fs::write(&server_config, text.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")))
        .expect("server config");

    Served::start(lab.config_path(), lab.dir(), &server_config, port)
}

fn client(lab: &Lab, served: &Served, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(args)
        .current_dir(lab.dir())
        .env("VESEMIR_SERVER", &served.url)
        .env("VESEMIR_TOKEN", TOKEN)
        .env_remove("VESEMIR_CONFIG")
        .output()
        .expect("runs vesemir")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn lab() -> Lab {
    Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts")
}

fn load() -> LoadOptions {
    LoadOptions { rate: 100, max_duration: Duration::from_secs(120), ..LoadOptions::default() }
}

#[test]
fn a_clean_deploy_through_the_server_under_load_drops_no_request() {
    let lab = lab();
    let served = serve(&lab);
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let deploy_file = lab.deploy_path().display().to_string();
    let output = client(&lab, &served, &["deploy", "-f", &deploy_file]);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("asked by lab-ci: succeeded"), "{all}");
    assert!(all.contains("6 succeeded, 0 failed"), "{all}");
    for host in lab.hosts() {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some("2.0.0"), "{}", host.name);
        let states = lab.lb_status(&host.name).expect("HAProxy answers");
        assert!(states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100), "{states:?}");
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
    assert!(report.by_version.get("2.0.0").is_some_and(|n| *n > 0), "{report}");
}

#[test]
fn failing_hosts_through_the_server_are_reported_with_phase_and_reason() {
    let mut lab = lab();
    let served = serve(&lab);
    lab.stop_sshd("web-02").expect("the lab does it");
    lab.fail_step_on("web-04").expect("the lab does it");
    lab.break_release_on("web-06").expect("the lab does it");
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let deploy_file = lab.deploy_path().display().to_string();
    let output = client(&lab, &served, &["deploy", "-f", &deploy_file, "--set", "strategy.max_failures=3"]);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("completed_with_failures"), "{all}");
    assert!(all.contains("3 succeeded, 2 failed, 1 unreachable"), "{all}");
    let line =
        |host: &str| all.lines().find(|l| l.trim_start().starts_with(host) && l.contains("  ")).unwrap_or("");
    assert!(line("web-02").contains("unreachable") && line("web-02").contains("connecting"), "{all}");
    assert!(line("web-04").contains("failed") && line("web-04").contains("exit code 7"), "{all}");
    assert!(line("web-04").contains("[out of rotation]"), "{all}");
    assert!(line("web-06").contains("failed") && line("web-06").contains("health check"), "{all}");
    assert!(all.contains("out of rotation now: web-04, web-06"), "{all}");
    let mut out = lab.out_of_rotation().expect("HAProxy answers");
    out.sort();
    assert_eq!(out, ["web-04", "web-06"]);
    assert_eq!(report.failed, 0, "{report}\n{all}");

    // The status command says the same, later, from the database.
    let status = client(&lab, &served, &["status", "1"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(text(&status).contains("out of rotation now: web-04, web-06"), "{}", text(&status));
}

#[test]
fn cancel_through_the_server_finishes_hosts_in_flight_and_starts_no_more() {
    let lab = lab();
    let served = serve(&lab);
    let traffic = lab.start_load(load());
    let deploy_file = lab.deploy_path().display().to_string();
    let follower = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["deploy", "-f", &deploy_file])
        .current_dir(lab.dir())
        .env("VESEMIR_SERVER", &served.url)
        .env("VESEMIR_TOKEN", TOKEN)
        .env_remove("VESEMIR_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs vesemir deploy");
    // Wait until the first batch is running its step, then cancel from another client.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = text(&client(&lab, &served, &["status", "1"]));
        if status.contains("step 1 (install)") {
            break;
        }
        assert!(Instant::now() < deadline, "the deployment never reached its step:\n{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancel = client(&lab, &served, &["cancel", "1"]);
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel));
    let output = follower.wait_with_output().expect("the follower ends");
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("asked by lab-ci: cancelled"), "{all}");
    assert!(all.contains("2 succeeded, 0 failed, 0 unreachable, 0 skipped, 4 cancelled"), "{all}");
    assert!(lab.out_of_rotation().expect("HAProxy answers").is_empty(), "nothing left out of rotation");
    for (i, host) in lab.hosts().iter().enumerate() {
        let expected = if i < 2 { "2.0.0" } else { "1.0.0" };
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some(expected), "{}", host.name);
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
}

#[test]
fn max_failures_through_the_server_stops_the_rollout() {
    let lab = lab();
    let served = serve(&lab);
    lab.fail_step_on("web-01").expect("the lab does it");
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let deploy_file = lab.deploy_path().display().to_string();
    let output = client(&lab, &served, &["deploy", "-f", &deploy_file, "--set", "strategy.max_failures=0"]);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("stopping: "), "{all}");
    assert!(all.contains("asked by lab-ci: stopped"), "{all}");
    assert!(all.contains("1 succeeded, 1 failed, 0 unreachable, 4 skipped"), "{all}");
    assert!(all.contains("out of rotation now: web-01\n"), "{all}");
    assert_eq!(lab.out_of_rotation().expect("HAProxy answers"), ["web-01"]);
    for host in ["web-03", "web-04", "web-05", "web-06"] {
        assert_eq!(lab.served_version(host).ok().as_deref(), Some("1.0.0"), "{host} never started");
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
}
