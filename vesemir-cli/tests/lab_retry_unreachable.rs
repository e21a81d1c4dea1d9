//! `strategy.retry_unreachable` end to end through the `vesemir` binary on the local lab (real
//! sshd per host, two HAProxy boxes, a Chef server) under steady load: web-01's sshd is down when
//! its turn comes and back before the end, so it is tried once more after the last batch and
//! ends updated and in rotation (its host lock claimed on the retry); web-03's stays down, so it
//! ends unreachable, reported, never taken out, while the rest of the fleet serves. Zero failed
//! requests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};

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

fn assert_in_rotation_with(lab: &Lab, host: &str, version: &str, all: &str) {
    assert_eq!(lab.served_version(host).ok().as_deref(), Some(version), "{host} serves\n{all}");
    let states = lab.lb_status(host).expect("HAProxy answers");
    assert_eq!(states.len(), 2, "{host} on both HAProxy boxes");
    assert!(
        states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100),
        "{host} is UP at weight 100 on both boxes: {states:?}\n{all}"
    );
}

/// The `event` objects of `-o json` lines, in order.
fn events(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("event").cloned())
        .collect()
}

#[test]
fn a_host_back_before_the_end_is_retried_and_updated_one_still_down_is_reported_under_load() {
    let started = Instant::now();
    let mut lab =
        Lab::start(LabOptions { hosts: 4, concurrency: 1, ..LabOptions::default() }).expect("the lab starts");
    lab.stop_sshd("web-01").expect("the lab does it");
    lab.stop_sshd("web-03").expect("the lab does it");
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(120),
        ..LoadOptions::default()
    });
    std::thread::sleep(Duration::from_millis(500));

    let deploy_file = lab.deploy_path().display().to_string();
    let mut child = vesemir(&lab)
        .args(["deploy", "-f", &deploy_file, "-o", "json"])
        .args(["--set", "strategy.retry_unreachable=true", "--set", "strategy.max_failures=2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts vesemir");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = Vec::new();
    let mut healed_at = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let event =
            serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v.get("event").cloned());
        if let Some(e) = event {
            if e["type"] == "host_finished" && e["host"] == "web-01" && healed_at.is_none() {
                assert_eq!(e["outcome"], "unreachable", "{e}");
                // Its SSH server comes back while the rest of the fleet deploys.
                lab.start_sshd("web-01").expect("the lab does it");
                healed_at = e["seq"].as_u64();
            }
        }
        lines.push(line);
    }
    let output = child.wait_with_output().expect("vesemir ends");
    std::thread::sleep(Duration::from_millis(500));
    let load = traffic.finish().expect("the load generator reports");
    let all = format!("{}\n{}", lines.join("\n"), String::from_utf8_lossy(&output.stderr));
    assert!(healed_at.is_some(), "web-01 ended unreachable first: {all}");
    assert_eq!(output.status.code(), Some(1), "web-03 stays unreachable: exit 1\n{all}");

    // Each unreachable host tried once more, after every other host ended, with the reason.
    let events = events(&lines);
    let retries: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["type"] == "host_retry")
        .map(|e| (e["host"].as_str().unwrap_or_default().to_owned(), e["attempt"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(retries, [("web-01".to_owned(), 2), ("web-03".to_owned(), 2)], "{all}");
    let seq_of = |kind: &str, host: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["type"] == kind && e["host"] == host)
            .filter_map(|e| e["seq"].as_u64())
            .collect()
    };
    let first_retry = seq_of("host_retry", "web-01")[0];
    for host in ["web-02", "web-04"] {
        assert!(seq_of("host_finished", host)[0] < first_retry, "{host} ended before the retry round: {all}");
    }
    let reason = events
        .iter()
        .find(|e| e["type"] == "host_retry" && e["host"] == "web-03")
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_default();
    assert!(reason.contains("onnection refused"), "the first attempt's error: {reason}");

    // The report: web-01 updated on its second attempt, web-03 unreachable after two.
    let report = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("report").cloned())
        .expect("a report line");
    assert_eq!(report["totals"]["succeeded"], 3, "{report}");
    assert_eq!(report["totals"]["unreachable"], 1, "{report}");
    let host = |name: &str| {
        report["hosts"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        (&host("web-01")["outcome"], &host("web-01")["attempts"]),
        (&"succeeded".into(), &2.into()),
        "{report}"
    );
    assert_eq!(host("web-01")["rotation"], "in_rotation", "{report}");
    assert_eq!(
        (&host("web-03")["outcome"], &host("web-03")["attempts"]),
        (&"unreachable".into(), &2.into()),
        "{report}"
    );
    assert_eq!(host("web-03")["rotation"], "in_rotation", "{report}");

    // On the real backend: every server in rotation; web-03 never touched, on the old version.
    assert_eq!(lab.out_of_rotation().expect("HAProxy answers"), Vec::<String>::new(), "{all}");
    for updated in ["web-01", "web-02", "web-04"] {
        assert_in_rotation_with(&lab, updated, "2.0.0", &all);
    }
    assert_in_rotation_with(&lab, "web-03", "1.0.0", &all);
    eprintln!(
        "{} requests served, {} failed, by version {:?}; test took {:.1}s",
        load.served,
        load.failed,
        load.by_version,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(load.failed, 0, "{load}\n{all}");
}
