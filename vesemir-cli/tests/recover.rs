//! `kill -9` of `vesemir deploy` mid-rollout, on real HAProxy and sshd: the journal shows the
//! servers it left out (`vesemir recover --list`), and `vesemir recover` puts each back in
//! rotation at its original weight.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{address_of, text, Lab, HOSTS};
use vesemir_core::ports::ServerStatus;

/// A deployment whose step takes long enough to be killed in: an inline changeset.
fn slow_deploy(lab: &Lab, seconds: u32) -> std::path::PathBuf {
    let hosts: Vec<String> =
        HOSTS.iter().map(|h| format!("{{ name = \"{h}\", address = \"{}\" }}", address_of(h))).collect();
    let text = format!(
        "application = \"shop\"\nenvironment = \"test\"\nteam = \"web\"\nversion = \"2.0.0\"\n\n\
         [targets]\nhosts = [{}]\n\n[load_balancer]\nbackend = \"be_web\"\ninstances = [{}]\ndrain_timeout = \"5s\"\n\n\
         [strategy]\nconcurrency = 2\n\n\
         [changeset]\nsteps = [{{ name = \"install\", run = \"sleep {seconds}\", timeout = \"60s\" }}]\n\
         [changeset.health]\ncommand = \"true\"\ntimeout = \"5s\"\ninterval = \"200ms\"\n",
        hosts.join(", "),
        lab.instances(),
    );
    let path = lab.dir.path().join(format!("slow-{seconds}.toml"));
    std::fs::write(&path, text).expect("deploy file");
    path
}

/// Starts `vesemir deploy -f deploy` and returns once both hosts of the first batch run their
/// step, with the thread reading its output and what it printed so far.
fn deploy_until_two_steps(
    lab: &Lab,
    deploy: &std::path::Path,
) -> (std::process::Child, std::thread::JoinHandle<()>, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["deploy", "-f"])
        .arg(deploy)
        .current_dir(lab.dir.path())
        .env_remove("VESEMIR_CONFIG")
        .env("VESEMIR_STATE_DIR", lab.dir.path().join("state"))
        .env("VESEMIR_REQUESTED_BY", "recover-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts vesemir");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<String> = Vec::new();
    while seen.iter().filter(|l| l.contains("step 1 (install)")).count() < 2 {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("no batch reached its step ({e}):\n{}", seen.join("\n"));
            }
        }
    }
    (child, reader, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_rollout_then_recover_puts_every_server_back() {
    let lab = Lab::start();
    let (mut child, reader, _) = deploy_until_two_steps(&lab, &slow_deploy(&lab, 30));
    // SIGKILL our own child: nothing of it runs after this.
    child.kill().expect("kill -9");
    let _ = child.wait();
    reader.join().expect("reader thread");
    let out: Vec<&str> = HOSTS[..2].to_vec();
    for host in &out {
        let states = lab.status(host).await;
        assert!(states.iter().all(|(s, _)| *s == ServerStatus::Maint), "{host} left in MAINT: {states:?}");
    }

    let listed = lab.vesemir(&["recover", "--list", "-o", "json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{json}");
    assert_eq!(runs[0]["state"], "interrupted", "{json}");
    let mut servers: Vec<&str> =
        runs[0]["servers"].as_array().expect("servers").iter().filter_map(|s| s["server"].as_str()).collect();
    servers.sort_unstable();
    assert_eq!(servers, out, "{json}");
    for server in runs[0]["servers"].as_array().expect("servers") {
        let original = server["original"].as_array().expect("original");
        assert_eq!(original.len(), 2, "both boxes: {server}");
        assert!(original.iter().all(|o| o["admin"] == "ready" && o["weight"] == 100), "{server}");
    }
    let plain = lab.vesemir(&["recover", "--list"]);
    assert!(text(&plain).contains("interrupted (the process died)"), "{}", text(&plain));

    let recovered = lab.vesemir(&["recover"]);
    assert_eq!(recovered.status.code(), Some(0), "{}", text(&recovered));
    assert!(text(&recovered).contains("healthy, back to its original state"), "{}", text(&recovered));
    for host in HOSTS {
        let states = lab.status(host).await;
        assert_eq!(states, [(ServerStatus::Up, 100), (ServerStatus::Up, 100)], "{host} back in rotation");
    }
    let after = lab.vesemir(&["recover", "--list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&after.stdout).expect("json");
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(0), "nothing left: {json}");

    // The killed run's host locks stay until `vesemir unlock` (or `[locks] stale_after`).
    let mut unlock = vec!["unlock", "-f", "deploy.toml"];
    unlock.extend(HOSTS);
    let unlocked = lab.vesemir(&unlock);
    assert_eq!(unlocked.status.code(), Some(0), "{}", text(&unlocked));

    // A new deploy of the backend no longer warns; one after another kill would.
    let clean = lab.vesemir(&["deploy", "-f", "deploy.toml"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(!text(&clean).contains("vesemir recover"), "{}", text(&clean));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cancels_gracefully_and_leaves_nothing_to_recover() {
    let lab = Lab::start();
    let (child, reader, _) = deploy_until_two_steps(&lab, &slow_deploy(&lab, 2));
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("runs kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("vesemir ends");
    reader.join().expect("reader thread");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "a cancelled deploy exits 1, not 143: {all}");
    assert!(all.contains("vesemir: cancelling (SIGTERM)"), "{all}");
    for host in HOSTS {
        let states = lab.status(host).await;
        assert_eq!(states, [(ServerStatus::Up, 100), (ServerStatus::Up, 100)], "{host} in rotation");
    }
    let listed = lab.vesemir(&["recover", "--list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(0), "nothing left: {json}");
}
