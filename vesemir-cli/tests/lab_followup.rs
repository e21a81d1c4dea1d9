//! End to end on the local lab (4 hosts, two HAProxy boxes, a Chef server) under steady load:
//! what the person on call does after a deployment went wrong, one scenario after the other on
//! one lab (each lab start costs seconds). A bad release fails a host: `vesemir retry` once it is
//! fixed finishes the deployment; `strategy.on_failure = "rollback"` takes the hosts a failed
//! deployment changed back to the previous version by itself; `vesemir rollback` after a good
//! deployment returns every host to the previous version; `vesemir restore` puts a healthy host
//! back at its own weight and leaves an unhealthy one out with the reason. `vesemir history`
//! shows all of it. Zero failed requests: the lab's HAProxy has `retries 0`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vesemir_core::ports::{AdminState, ServerStatus};
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};

const HOSTS: [&str; 4] = ["web-01", "web-02", "web-03", "web-04"];

fn vesemir(lab: &Lab) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
    command
        .arg("--config")
        .arg(lab.config_path())
        .current_dir(lab.dir())
        .env_remove("VESEMIR_CONFIG")
        .env_remove("VESEMIR_SERVER")
        .env("VESEMIR_STATE_DIR", lab.dir().join("state"))
        .env("VESEMIR_REQUESTED_BY", "lab-test");
    command
}

fn run(lab: &Lab, args: &[&str]) -> Output {
    vesemir(lab).args(args).output().expect("runs vesemir")
}

fn deploy(lab: &Lab, args: &[&str]) -> Output {
    let file = lab.deploy_path().display().to_string();
    vesemir(lab).args(["deploy", "-f", &file]).args(args).output().expect("runs vesemir")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `vesemir history shop lab -o json`.
fn history(lab: &Lab) -> serde_json::Value {
    let output = run(lab, &["history", "shop", "lab", "-o", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("history -o json is JSON")
}

/// Every host serves `version`, UP and READY at its weight (web-01's operator set 50) on both
/// HAProxy boxes.
fn assert_fleet_on(lab: &Lab, version: &str, all: &str) {
    for host in HOSTS {
        assert_eq!(lab.served_version(host).ok().as_deref(), Some(version), "{host} serves\n{all}");
        let weight = if host == "web-01" { 50 } else { 100 };
        let states = lab.lb_status(host).expect("HAProxy answers");
        assert_eq!(states.len(), 2, "{host} on both boxes");
        assert!(
            states
                .iter()
                .all(|s| s.status == ServerStatus::Up && s.admin == AdminState::Ready && s.weight == weight),
            "{host} is in rotation at weight {weight} on both boxes: {states:?}\n{all}"
        );
    }
}

fn set_weight(lab: &Lab, host: &str, percent: u8) {
    use vesemir_core::name::ServerName;
    use vesemir_core::ports::{LoadBalancer, Weight};
    let backend = lab.backend().expect("the lab's backend");
    let server = ServerName::new(host).expect("a server name");
    let weight = Weight::percent(percent).expect("a weight");
    lab.block_on(async move {
        vesemir_haproxy::HaproxyLoadBalancer::new(vesemir_haproxy::HaproxyConfig::default())
            .set_weight(&backend, &server, weight)
            .await
    })
    .expect("HAProxy takes the change");
}

#[test]
fn retry_automatic_rollback_rollback_and_restore_under_load() {
    let started = Instant::now();
    let lab =
        Lab::start(LabOptions { hosts: 4, concurrency: 2, ..LabOptions::default() }).expect("the lab starts");
    set_weight(&lab, "web-01", 50);
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(400),
        ..LoadOptions::default()
    });
    std::thread::sleep(Duration::from_millis(500));

    // 1. Release 2.0.0 is bad on web-03: it fails its health gate and is left out. The summary
    //    names the next commands.
    lab.break_version_on("web-03", "2.0.0").expect("the lab does it");
    let failed = deploy(&lab, &[]);
    let all = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{all}");
    let parent = history(&lab)["deployments"][0]["id"].as_str().expect("a run id").to_owned();
    assert!(all.contains(&format!("vesemir retry {parent}")), "{all}");
    assert!(all.contains("vesemir restore web-03"), "{all}");
    assert!(all.contains("vesemir rollback shop lab"), "{all}");

    // Fixed: the retry deploys web-03 alone, taking it as it is (out of rotation), and puts it
    // back at its own weight once healthy.
    lab.heal_release_on("web-03").expect("the lab does it");
    let retried = run(&lab, &["retry", &parent]);
    let all = text(&retried);
    assert_eq!(retried.status.code(), Some(0), "{all}");
    assert!(all.contains("retrying run") && all.contains("1 host(s): web-03"), "{all}");
    assert_fleet_on(&lab, "2.0.0", &all);
    let shown = history(&lab);
    assert_eq!(shown["deployments"][0]["retry_of"], parent.as_str(), "{shown}");
    assert_eq!(shown["deployments"][0]["hosts"].as_array().map(Vec::len), Some(1), "{shown}");
    for host in HOSTS {
        assert_eq!(shown["hosts"][host]["version"], "2.0.0", "{shown}");
    }
    let retry_id = shown["deployments"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(shown["hosts"]["web-03"]["deployment"], retry_id.as_str(), "{shown}");

    // 2. on_failure = "rollback": 3.0.0 fails on web-02 in the first batch; web-01 (moved to
    //    3.0.0) and web-02 go back to 2.0.0, web-03 and web-04 were never touched.
    lab.break_version_on("web-02", "3.0.0").expect("the lab does it");
    // Strict batches: with the sliding window, web-03 would start as soon as web-01 is done.
    let stopped = deploy(
        &lab,
        &[
            "--set",
            "version=3.0.0",
            "--set",
            "strategy.on_failure=rollback",
            "--set",
            "strategy.window=batches",
        ],
    );
    let all = text(&stopped);
    assert_eq!(stopped.status.code(), Some(1), "the deployment failed, rolled back or not\n{all}");
    assert!(all.contains("on_failure = \"rollback\""), "{all}");
    assert!(all.contains("rolling back shop in lab from 3.0.0"), "{all}");
    assert!(all.contains("succeeded"), "{all}");
    assert_fleet_on(&lab, "2.0.0", &all);
    // Two deployments linked to the failed one: first web-02, which it left out (taken as it
    // is, then put back), then web-01.
    assert!(
        all.contains("first the host(s) run") && all.contains("(web-02), then the others (web-01)"),
        "{all}"
    );
    let shown = history(&lab);
    let failed_id = shown["deployments"][2]["id"].as_str().expect("an id").to_owned();
    assert_eq!(shown["deployments"][2]["outcome"], "stopped", "{shown}");
    for (i, host) in [(0, "web-01"), (1, "web-02")] {
        let d = &shown["deployments"][i];
        assert_eq!(d["rollback_of"], failed_id.as_str(), "{shown}");
        assert_eq!(
            (d["outcome"].as_str(), d["version"].as_str()),
            (Some("succeeded"), Some("2.0.0")),
            "{shown}"
        );
        assert_eq!(d["hosts"][0]["host"], host, "{shown}");
    }

    // 3. A good 3.0.0, then `vesemir rollback`: every host back on 2.0.0.
    lab.heal_release_on("web-02").expect("the lab does it");
    let good = deploy(&lab, &["--set", "version=3.0.0"]);
    assert_eq!(good.status.code(), Some(0), "{}", text(&good));
    let rolled = run(&lab, &["rollback", "shop", "lab"]);
    let all = text(&rolled);
    assert_eq!(rolled.status.code(), Some(0), "{all}");
    assert_fleet_on(&lab, "2.0.0", &all);
    assert_eq!(history(&lab)["deployments"][0]["version"], "2.0.0");

    // 4. 4.0.0 is bad on web-01 and web-02 (the first batch): both are left out. web-01's app
    //    is fixed (restarted healthy while out of rotation), web-02's is not: restore puts
    //    web-01 back at its own weight and leaves web-02 out, saying why.
    lab.break_version_on("web-01", "4.0.0").expect("the lab does it");
    lab.break_version_on("web-02", "4.0.0").expect("the lab does it");
    let bad = deploy(&lab, &["--set", "version=4.0.0", "--set", "strategy.max_failures=1"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    lab.heal_release_on("web-01").expect("the lab does it");
    lab.restart_app_undrained("web-01", "4.0.0").expect("the lab does it");
    let restored = run(&lab, &["restore", "web-01", "web-02", "-o", "json"]);
    assert_eq!(restored.status.code(), Some(1), "{}", text(&restored));
    let json: serde_json::Value = serde_json::from_slice(&restored.stdout).expect("restore -o json is JSON");
    let servers = json["runs"][0]["servers"].as_array().cloned().unwrap_or_default();
    let result = |host: &str| servers.iter().find(|s| s["host"] == host).cloned().unwrap_or_default();
    assert_eq!(result("web-01")["result"], "restored", "{json}");
    assert_eq!(result("web-02")["result"], "left_out", "{json}");
    assert!(result("web-02")["reason"].as_str().unwrap_or_default().contains("health"), "{json}");
    assert_eq!(json["left_out"], 1, "{json}");
    let states = lab.lb_status("web-01").expect("HAProxy answers");
    assert!(states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 50), "{states:?}");
    assert!(lab
        .lb_status("web-02")
        .expect("HAProxy answers")
        .iter()
        .all(|s| s.status == ServerStatus::Maint));

    std::thread::sleep(Duration::from_millis(300));
    let report = traffic.finish().expect("the load generator reports");
    eprintln!(
        "{} requests served, {} failed, by version {:?}; test took {:.1}s",
        report.served,
        report.failed,
        report.by_version,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report.failed, 0, "{report}");
}
