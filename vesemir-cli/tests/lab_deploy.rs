//! End to end through the `vesemir` binary on a local lab of 6 hosts (each its own sshd and app
//! on its own loopback address), two HAProxy boxes and a Chef server, under steady load: a clean
//! deploy, failing hosts of every kind, `max_failures`, and cancelling mid-deploy.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};

fn lab() -> Lab {
    Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts")
}

fn load() -> LoadOptions {
    LoadOptions { rate: 100, max_duration: Duration::from_secs(120), ..LoadOptions::default() }
}

fn vesemir(lab: &Lab) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
    command
        .arg("--config")
        .arg(lab.config_path())
        .current_dir(lab.dir())
        .env_remove("VESEMIR_CONFIG")
        .env("VESEMIR_STATE_DIR", lab.dir().join("state"))
        .env("VESEMIR_REQUESTED_BY", "lab-test");
    command
}

fn deploy(lab: &Lab, args: &[&str]) -> Output {
    let deploy_file = lab.deploy_path().to_owned();
    let mut command = vesemir(lab);
    command.arg("deploy").arg("-f").arg(&deploy_file).args(args);
    command.output().expect("runs vesemir")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn assert_in_rotation_with(lab: &Lab, host: &str, version: &str) {
    assert_eq!(lab.served_version(host).ok().as_deref(), Some(version), "{host} serves");
    let states = lab.lb_status(host).expect("HAProxy answers");
    assert_eq!(states.len(), 2, "{host} on both HAProxy boxes");
    assert!(
        states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100),
        "{host} is UP at weight 100 on both boxes: {states:?}"
    );
}

fn assert_left_out(lab: &Lab, host: &str) {
    let states = lab.lb_status(host).expect("HAProxy answers");
    assert_eq!(states.len(), 2);
    assert!(
        states.iter().all(|s| s.status == ServerStatus::Maint),
        "{host} stays in MAINT on both boxes: {states:?}"
    );
}

#[test]
fn a_planned_then_clean_deploy_under_load_updates_every_host_without_a_failed_request() {
    let lab = lab();
    // The plan finds the hosts and both HAProxy boxes by Chef search, and reaches every host.
    let plan = vesemir(&lab).arg("plan").arg("-f").arg(lab.deploy_path()).output().expect("runs vesemir");
    let planned = text(&plan);
    assert_eq!(plan.status.code(), Some(0), "{planned}");
    assert!(planned.contains("(6 hosts, sliding window, at most 2 out of rotation"), "{planned}");
    for lb in lab.haproxy() {
        assert!(planned.contains(&format!("{}:{}", lb.address, lab.api_port())), "{planned}");
    }
    assert_eq!(planned.matches("ssh ok").count(), 6, "{planned}");

    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let output = deploy(&lab, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("6 succeeded, 0 failed"), "{all}");
    for host in lab.hosts() {
        assert_in_rotation_with(&lab, &host.name, "2.0.0");
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
    assert!(report.served > 100, "{report}");
    assert!(report.by_version.get("1.0.0").is_some_and(|n| *n > 0), "{report}");
    assert!(report.by_version.get("2.0.0").is_some_and(|n| *n > 0), "{report}");
}

/// A deployment file like the lab's, with its own changeset instead of the lab's playbook: a
/// stage step (a download, run while the host still serves), the switch (restart) out of
/// rotation, and the health gate as Vesemir's own HTTP check of `/health` every 20 ms.
fn staged_http_deploy(lab: &Lab) -> std::path::PathBuf {
    let root = lab.dir().display();
    let port = lab.hosts()[0].app.port();
    let base = std::fs::read_to_string(lab.deploy_path()).expect("the lab's deployment file");
    let base: String =
        base.lines().filter(|l| !l.starts_with("playbook")).map(|l| format!("{l}\n")).collect();
    let text = format!(
        "{base}\n[changeset]\nsteps = [\n  {{ name = \"download\", run = \"sleep 0.3 && echo fetched {{version}}\", timeout = \"30s\", stage = true }},\n  {{ name = \"switch\", run = \"bash {root}/step.sh {root}/hosts/{{host}} {{version}}\", timeout = \"30s\" }},\n]\n[changeset.health]\nload_balancer_up = true\nhttp = {{ url = \"http://{{address}}:{port}/health\", status = 200, interval = \"20ms\", timeout = \"8s\" }}\n"
    );
    let path = lab.dir().join("staged-http.toml");
    std::fs::write(&path, text).expect("writes the deployment file");
    path
}

#[test]
fn a_sliding_window_with_a_stage_step_and_an_http_health_check_deploys_under_load_without_a_failed_request() {
    let lab = lab();
    let file = staged_http_deploy(&lab);
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let output = vesemir(&lab)
        .arg("deploy")
        .arg("-f")
        .arg(&file)
        .args(["--set", "version=3.0.0", "--output", "json"])
        .output()
        .expect("runs vesemir");
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    for host in lab.hosts() {
        assert_in_rotation_with(&lab, &host.name, "3.0.0");
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
    assert!(report.by_version.get("3.0.0").is_some_and(|n| *n > 0), "{report}");

    // Per host: the download ran before the drain, the health gate was the HTTP check, and
    // the host's time out of rotation is on its end (the download is not in it).
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("event").cloned())
        .collect();
    let mut finished = 0;
    for host in lab.hosts() {
        let of_host: Vec<&serde_json::Value> =
            events.iter().filter(|e| e["host"] == host.name.as_str()).collect();
        let position = |what: &dyn Fn(&serde_json::Value) -> bool| of_host.iter().position(|e| what(e));
        let download = position(&|e| {
            e["type"] == "host_phase" && e["phase"]["phase"] == "step" && e["phase"]["name"] == "download"
        });
        let drain = position(&|e| e["type"] == "host_phase" && e["phase"]["phase"] == "draining");
        assert!(
            download.is_some() && download < drain,
            "{}: download before the drain: {of_host:?}",
            host.name
        );
        let end = of_host.iter().find(|e| e["type"] == "host_finished").expect("the host ended");
        let out_ms = end["out_of_rotation_ms"].as_u64().expect("time out of rotation");
        assert!((500..8000).contains(&out_ms), "{}: out of rotation {out_ms} ms", host.name);
        finished += 1;
    }
    assert_eq!(finished, 6);
    // At most 2 of the 6 out at any moment: counted from the events, in order.
    let (mut out, mut most) = (0i32, 0i32);
    for e in &events {
        if e["type"] == "host_phase" && e["phase"]["phase"] == "draining" {
            out += 1;
        }
        if e["type"] == "host_finished" {
            out -= 1;
        }
        most = most.max(out);
    }
    assert!(most <= 2, "{most} hosts out at once");
}

/// The part of the final summary about `host`: `<host> (<address>) <outcome> during <phase>`, its
/// `why:` and its `now:` lines.
fn summary_of<'a>(all: &'a str, lab: &Lab, host: &str) -> &'a str {
    let header = format!("\n{host} ({}) ", lab.host(host).expect("a lab host").address);
    let start = all.find(&header).unwrap_or_else(|| panic!("no summary entry for {host}:\n{all}"));
    let rest = &all[start + 1..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn unreachable_failing_and_unhealthy_hosts_are_reported_and_the_rest_serve_without_a_failed_request() {
    let mut lab = lab();
    lab.stop_sshd("web-02").expect("the lab does it");
    lab.fail_step_on("web-04").expect("the lab does it");
    lab.break_release_on("web-06").expect("the lab does it");
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let output = deploy(&lab, &["--set", "strategy.max_failures=3"]);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("3 succeeded, 2 failed, 1 unreachable"), "{all}");

    let unreachable = summary_of(&all, &lab, "web-02");
    assert!(unreachable.contains("UNREACHABLE during connecting"), "{unreachable}");
    assert!(unreachable.contains("why: ") && unreachable.contains("Connection refused"), "{unreachable}");
    assert!(unreachable.contains("now: in rotation"), "{unreachable}");
    let step = summary_of(&all, &lab, "web-04");
    assert!(step.contains("FAILED during step 1 (install)"), "{step}");
    assert!(step.contains("why: the command ended with exit code 7"), "{step}");
    assert!(step.contains("the install of 2.0.0 fails on this host"), "the step's stderr is shown: {step}");
    let health = summary_of(&all, &lab, "web-06");
    assert!(health.contains("FAILED during health check"), "{health}");
    assert!(health.contains("answered: HTTP/1.1 500"), "the health command's stderr is shown: {health}");
    for host in ["web-04", "web-06"] {
        assert!(summary_of(&all, &lab, host).contains("now: OUT OF ROTATION"), "{all}");
    }

    // Out of rotation: exactly the hosts drained and then failed, and the report names them.
    let mut out = lab.out_of_rotation().expect("HAProxy answers");
    out.sort();
    assert_eq!(out, ["web-04", "web-06"], "{all}");
    assert!(all.contains("Out of rotation now: web-04"), "{all}");
    assert!(all.contains("web-06 ("), "{all}");
    assert_left_out(&lab, "web-04");
    assert_left_out(&lab, "web-06");
    // The unreachable host was never touched: still serving the old version.
    assert_in_rotation_with(&lab, "web-02", "1.0.0");
    for host in ["web-01", "web-03", "web-05"] {
        assert_in_rotation_with(&lab, host, "2.0.0");
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
}

#[test]
fn max_failures_stops_the_rollout_and_no_new_host_starts() {
    let lab = lab();
    lab.fail_step_on("web-01").expect("the lab does it");
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let output = deploy(&lab, &["--set", "strategy.max_failures=0"]);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("stopping: "), "{all}");
    assert!(all.contains("1 succeeded, 1 failed, 0 unreachable, 4 skipped"), "{all}");
    let failed = summary_of(&all, &lab, "web-01");
    assert!(failed.contains("FAILED during step 1 (install)"), "{failed}");
    assert_eq!(lab.out_of_rotation().expect("HAProxy answers"), ["web-01"], "{all}");
    assert!(all.contains("Out of rotation now: web-01"), "{all}");
    assert_in_rotation_with(&lab, "web-02", "2.0.0");
    for host in ["web-03", "web-04", "web-05", "web-06"] {
        assert_in_rotation_with(&lab, host, "1.0.0");
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
}

#[test]
fn sigint_mid_deploy_finishes_the_hosts_in_flight_and_starts_no_more() {
    let lab = lab();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let mut command = vesemir(&lab);
    command.arg("deploy").arg("-f").arg(lab.deploy_path()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("starts vesemir");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Wait until the first batch runs its step, then interrupt this vesemir (our own child).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("step 1 (install)")) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining) {
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("no host reached its step ({e}):\n{}", seen.join("\n"));
            }
        }
    }
    let status = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().expect("runs kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("vesemir ends");
    reader.join().expect("reader thread");
    seen.extend(lines.try_iter());
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = format!("{}\n{}", seen.join("\n"), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("vesemir: cancelling"), "{all}");
    assert!(all.contains("Deployment cancelled"), "{all}");
    assert!(all.contains("2 succeeded, 0 failed, 0 unreachable, 0 skipped, 4 cancelled"), "{all}");
    // The batch in flight finished and went back into rotation; no other host was touched.
    assert_in_rotation_with(&lab, "web-01", "2.0.0");
    assert_in_rotation_with(&lab, "web-02", "2.0.0");
    for host in ["web-03", "web-04", "web-05", "web-06"] {
        assert_in_rotation_with(&lab, host, "1.0.0");
    }
    assert!(!all.contains("Out of rotation now"), "{all}");
    assert_eq!(report.failed, 0, "{report}\n{all}");
}

#[test]
fn the_lab_counts_requests_to_a_restart_without_drain_as_failed() {
    // What the zero above is worth: the lab's HAProxy has `retries 0` and no redispatch, so a
    // service restarted without taking it out of rotation first does drop requests.
    let lab = Lab::start(LabOptions { hosts: 2, ..LabOptions::default() }).expect("the lab starts");
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    lab.restart_app_undrained("web-01", "2.0.0").expect("the lab does it");
    lab.wait_all_up(Duration::from_secs(10)).expect("the lab does it");
    std::thread::sleep(Duration::from_millis(300));
    let report = traffic.finish().expect("the load generator reports");
    assert!(report.failed > 0, "a restart without drain drops requests: {report}");
    assert!(report.failures.iter().any(|f| f.contains("status 503")), "HAProxy answers 503: {report}");
    assert_eq!(lab.served_version("web-01").ok().as_deref(), Some("2.0.0"));
}

/// Servers some box does not have in rotation (not UP, or at weight 0), from HAProxy itself.
fn servers_out(lab: &Lab) -> Vec<String> {
    lab.hosts()
        .iter()
        .filter(|h| {
            lab.lb_status(&h.name)
                .map(|states| states.iter().any(|s| s.status != ServerStatus::Up || s.weight == 0))
                .unwrap_or(true)
        })
        .map(|h| h.name.clone())
        .collect()
}

/// Puts `host`'s server in maintenance on every HAProxy box, as an operator would.
fn put_in_maintenance(lab: &Lab, host: &str) {
    use vesemir_core::name::ServerName;
    use vesemir_core::ports::{AdminState, LoadBalancer};
    let backend = lab.backend().expect("the lab's backend");
    let server = ServerName::new(host).expect("a server name");
    lab.block_on(async move {
        vesemir_haproxy::HaproxyLoadBalancer::new(vesemir_haproxy::HaproxyConfig::default())
            .set_state(&backend, &server, AdminState::Maint)
            .await
    })
    .expect("HAProxy takes the change");
}

#[test]
fn a_host_in_maintenance_is_refused_by_default_and_skip_leaves_it_untouched_within_the_budget() {
    let lab = lab();
    put_in_maintenance(&lab, "web-03");
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));

    // The default policy refuses before anything changes, naming the server and its state.
    let refused = deploy(&lab, &[]);
    let all = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{all}");
    assert!(all.contains("web-03 (host web-03): MAINT"), "{all}");
    assert!(all.contains("nothing was changed"), "{all}");
    for host in lab.hosts() {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some("1.0.0"), "{} untouched", host.name);
    }
    assert_left_out(&lab, "web-03");

    // skip: the others are deployed, web-03 stays in MAINT, never more than 2 out at once.
    let deploy_file = lab.deploy_path().to_owned();
    let mut child = vesemir(&lab)
        .arg("deploy")
        .arg("-f")
        .arg(&deploy_file)
        .args(["--set", "load_balancer.servers_not_in_rotation=skip"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs vesemir");
    let mut most_out = 0;
    while child.try_wait().expect("waits").is_none() {
        most_out = most_out.max(servers_out(&lab).len());
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("its output");
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("5 succeeded, 0 failed, 0 unreachable, 1 skipped"), "{all}");
    assert!(all.contains("web-03: skipped (its server was not in rotation"), "{all}");
    assert!(
        most_out <= 2,
        "{most_out} servers out of rotation at once, concurrency 2 (web-03 included)\n{all}"
    );
    assert!(most_out >= 1, "web-03 was seen out all along");
    assert_left_out(&lab, "web-03");
    assert_eq!(lab.served_version("web-03").ok().as_deref(), Some("1.0.0"), "web-03 never deployed");
    for host in lab.hosts().iter().filter(|h| h.name != "web-03") {
        assert_in_rotation_with(&lab, &host.name, "2.0.0");
    }
    assert_eq!(report.failed, 0, "{report}\n{all}");
}

#[test]
fn a_host_already_down_is_refused_by_default_and_nothing_changes() {
    let lab = lab();
    // Its app is down (every health check fails) before the deploy starts.
    lab.break_release_on("web-02").expect("the lab does it");
    lab.restart_app_undrained("web-02", "1.0.0").expect("the lab does it");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.lb_status("web-02").expect("HAProxy answers").iter().all(|s| s.status == ServerStatus::Down) {
        assert!(Instant::now() < deadline, "HAProxy never marked web-02 DOWN");
        std::thread::sleep(Duration::from_millis(100));
    }
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let output = deploy(&lab, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("web-02 (host web-02): READY down"), "{all}");
    for host in lab.hosts().iter().filter(|h| h.name != "web-02") {
        assert_in_rotation_with(&lab, &host.name, "1.0.0");
    }
    assert!(lab.lb_status("web-02").expect("HAProxy answers").iter().all(|s| s.status == ServerStatus::Down));
    assert_eq!(report.failed, 0, "{report}\n{all}");
}
