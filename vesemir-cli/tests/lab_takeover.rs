//! Two `vesemir serve` instances on one PostgreSQL database, on the local lab under steady
//! load: the instance running a deployment is killed (SIGKILL) while hosts are in their steps;
//! the other takes the deployment over once its lease expired, checks the hosts that were in
//! flight, and finishes the rollout. Every host ends on the new version and in rotation (as
//! HAProxy says), no user request fails, and the one record shows the handover.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Served;
use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};
use vesemir_testkit::postgres::Postgres;
use vesemir_testkit::process::free_port;

const TOKEN: &str = "lab-team-demo-token";
const LEASE: Duration = Duration::from_secs(2);

/// Starts instance `name` of the lab's server on `database`, on a free port.
fn serve(lab: &Lab, database: &str, name: &str) -> Served {
    let port = free_port();
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("database = ") {
                format!("database = \"{database}\"")
            } else {
                // Steps that take 2 s: room to kill the instance while hosts are in them.
                line.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
                    .replace("run = \"bash ", "run = \"sleep 2 && bash ")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{text}\n\n[cluster]\ninstance = \"{name}\"\nlease = \"{}s\"\n", LEASE.as_secs());
    let server_config = lab.dir().join(format!("vesemir-server-{name}.toml"));
    std::fs::write(&server_config, text).expect("server config");
    let child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .arg("--config")
        .arg(lab.config_path())
        .arg("serve")
        .arg("--server-config")
        .arg(&server_config)
        .current_dir(lab.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts vesemir serve");
    Served::listening(child, port)
}

fn client(lab: &Lab, served: &Served) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
    command
        .current_dir(lab.dir())
        .env("VESEMIR_SERVER", &served.url)
        .env("VESEMIR_TOKEN", TOKEN)
        .env_remove("VESEMIR_CONFIG");
    command
}

fn run(lab: &Lab, served: &Served, args: &[&str]) -> Output {
    client(lab, served).args(args).output().expect("runs vesemir")
}

/// Deployment 1 as `served` shows it.
fn status(lab: &Lab, served: &Served) -> serde_json::Value {
    let output = run(lab, served, &["status", "1", "-o", "json"]);
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    reply["deployment"].clone()
}

/// Deployment 1's events so far, as `served` shows them.
fn events(lab: &Lab, served: &Served) -> Vec<serde_json::Value> {
    let output = run(lab, served, &["logs", "1", "-o", "json"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|line| line["event"].clone())
        .collect()
}

#[test]
fn killing_the_instance_running_a_deployment_lets_the_other_finish_it_under_load() {
    let cluster = Postgres::start();
    let database = cluster.database();
    let lab =
        Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts");
    let mut a = serve(&lab, &database, "a");
    let b = serve(&lab, &database, "b");
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(180),
        ..LoadOptions::default()
    });
    std::thread::sleep(Duration::from_millis(500));
    let deploy_file = lab.deploy_path().display().to_string();
    let mut follower = client(&lab, &a)
        .args(["deploy", "-f", &deploy_file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("deploy");

    // Killed while a host of the first batch is in its steps (mid-batch).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = status(&lab, &b);
        let in_steps = d["hosts"].as_array().is_some_and(|hosts| {
            hosts.iter().any(|h| h["phase"].as_str().is_some_and(|p| p.starts_with("step")))
        });
        if in_steps {
            break;
        }
        assert!(Instant::now() < deadline, "no host reached its steps: {d}");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill();
    let killed = Instant::now();
    let _ = follower.kill();
    let _ = follower.wait();

    // B takes it over within the lease (and its sweep), and finishes it.
    let taken = loop {
        if events(&lab, &b).iter().any(|e| e["type"] == "handover") {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < LEASE * 5, "no handover {:?} after the kill", killed.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let d = loop {
        let d = status(&lab, &b);
        if d["status"] != "running" && d["status"] != "queued" && !d["status"].is_null() {
            break d;
        }
        assert!(Instant::now() < deadline, "never ended: {d}");
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    eprintln!("taken over {taken:?} after kill -9 (lease {LEASE:?}); load: {report}");

    assert_eq!(d["status"], "succeeded", "{d}");
    for host in lab.hosts() {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some("2.0.0"), "{}", host.name);
        let states = lab.lb_status(&host.name).expect("HAProxy answers");
        assert!(
            states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100),
            "{}: {states:?}",
            host.name
        );
    }
    assert_eq!(report.failed, 0, "{report}");
    let events = events(&lab, &b);
    let handovers: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "handover").collect();
    assert_eq!(handovers.len(), 1, "{events:?}");
    assert!(handovers[0]["from"].as_str().is_some_and(|f| f.starts_with("a/")), "{}", handovers[0]);
    assert!(handovers[0]["to"].as_str().is_some_and(|t| t.starts_with("b/")), "{}", handovers[0]);
    assert_eq!(d["totals"]["succeeded"], 6, "{d}");
}
