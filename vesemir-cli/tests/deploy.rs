//! The `vesemir` binary against real servers: two haproxy instances and an OpenSSH sshd on
//! loopback, started by the test. Exit codes, error messages, JSON output, plan output, and real
//! deploys (one clean, one with a failing host).

mod common;

use std::process::Command;

use common::{text, vesemir_in, Lab, HOSTS};
use vesemir_core::ports::ServerStatus;
use vesemir_testkit::process::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_deploy_updates_every_host_and_prints_json() {
    let lab = Lab::start();
    let output = lab.vesemir(&["deploy", "-f", "deploy.toml", "--set", "version=2.0.0", "--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for host in HOSTS {
        assert_eq!(lab.version_on(host).as_deref(), Some("2.0.0"), "{host}");
        let states = lab.status(host).await;
        assert_eq!(states.len(), 2);
        assert!(states.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100), "{host}: {states:?}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines[..lines.len() - 1].iter().all(|l| l["event"]["seq"].is_u64()), "events first");
    assert_eq!(lines[0]["event"]["type"], "deployment_started");
    let report = &lines[lines.len() - 1]["report"];
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["totals"]["succeeded"], 3);
    assert!(report["max_out_of_rotation"].as_u64().is_some_and(|n| n <= 2), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_is_named_with_its_phase_and_left_out_of_rotation() {
    let lab = Lab::start();
    lab.write_deploy("broken.toml", "web-2", &lab.instances());
    let output = lab.vesemir(&["deploy", "-f", "broken.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("web-2 (127.0.0.2) FAILED during step 1 (install)"), "{all}");
    assert!(all.contains("why: the command ended with exit code 1"), "{all}");
    assert!(all.contains("Out of rotation now: web-2"), "{all}");
    assert!(all.contains("2 succeeded, 1 failed"), "{all}");
    assert_eq!(lab.version_on("web-1").as_deref(), Some("1.0.0"));
    assert_eq!(lab.version_on("web-2"), None);
    assert!(lab.status("web-2").await.iter().all(|(s, _)| *s == ServerStatus::Maint));
    assert!(lab.status("web-3").await.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_hosts_servers_and_batches_and_changes_nothing() {
    let lab = Lab::start();
    let output = lab.vesemir(&["plan", "-f", "deploy.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("Plan: shop 1.0.0 to test (3 hosts, sliding window, at most 2 out of rotation"),
        "{all}"
    );
    assert!(all.contains("batch 1\n  web-1"), "{all}");
    let batches = lab.vesemir(&["plan", "-f", "deploy.toml", "--set", "strategy.window=batches"]);
    let all = text(&batches);
    assert!(all.contains("(3 hosts, 2 batches, at most 2 out of rotation"), "{all}");
    assert!(all.contains("batch 2\n  web-3"), "{all}");
    assert_eq!(all.matches("ssh ok").count(), 3, "{all}");
    assert!(lab.version_on("web-1").is_none());
    assert!(lab.status("web-1").await.iter().all(|(s, _)| *s == ServerStatus::Up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_in_maintenance_is_refused_with_exit_2_and_plan_shows_it_and_the_budget() {
    use vesemir_core::ports::AdminState;
    let lab = Lab::start();
    lab.set_state("web-2", AdminState::Maint).await;
    let output = lab.vesemir(&["deploy", "-f", "deploy.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("nothing was changed: 1 target server(s) not in rotation"), "{all}");
    assert!(all.contains("web-2 (host web-2): MAINT down, weight 100/100 on 127.0.0.1:"), "{all}");
    assert!(all.contains("servers_not_in_rotation = \"skip\""), "{all}");
    assert!(lab.version_on("web-1").is_none(), "nothing deployed");
    assert!(lab.status("web-1").await.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100));

    let skip = std::fs::read_to_string(lab.dir.path().join("deploy.toml"))
        .expect("deploy file")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"5s\"\nservers_not_in_rotation = \"skip\"");
    std::fs::write(lab.dir.path().join("skip.toml"), skip).expect("write");
    let output = lab.vesemir(&["plan", "-f", "skip.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("Budget: concurrency 2, 1 already out (web-2): 1 more may leave rotation at once"),
        "{all}"
    );
    assert!(all.contains("skipped (not in rotation, left as found)\n  web-2"), "{all}");
    assert!(all.contains("READY up, weight 100/100 on 127.0.0.1:"), "{all}");
    let output = lab.vesemir(&["plan", "-f", "skip.toml", "--output", "json"]);
    let plan: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
    assert_eq!(plan["budget"]["effective"], 1, "{plan}");
    assert_eq!(plan["hosts"][2]["skip"], true, "{plan}");
    assert_eq!(plan["hosts"][2]["states"][0]["admin"], "maint", "{plan}");

    let output = lab.vesemir(&["deploy", "-f", "skip.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(lab.version_on("web-2").is_none(), "skipped");
    assert!(lab.status("web-2").await.iter().all(|(s, _)| *s == ServerStatus::Maint), "left as found");
    assert_eq!(lab.version_on("web-3").as_deref(), Some("1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_load_balancer_exits_3_before_changing_anything() {
    let lab = Lab::start();
    let instances = format!("{}, {{ address = \"127.0.0.1\", port = {} }}", lab.instances(), free_port());
    lab.write_deploy("down.toml", "none", &instances);
    let output = lab.vesemir(&["deploy", "-f", "down.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(3), "{all}");
    assert!(all.contains("nothing was changed"), "{all}");
    assert!(all.contains("unreachable"), "{all}");
    assert!(lab.version_on("web-1").is_none());
}

#[test]
fn bad_configuration_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("vesemir.toml"),
        "[ssh]\nuser = \"x\"\nkey = \"nope\"\nhost_key_mode = \"yolo\"\n",
    )
    .expect("write");
    let output = vesemir_in(dir.path(), &["config", "check"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("vesemir.toml: 2 problems"), "{all}");
    assert!(all.contains("vesemir.toml: ssh.key: cannot read"), "{all}");
    assert!(all.contains("vesemir.toml: ssh.host_key_mode:"), "{all}");

    // A flag fixes one of them for this run; the other is still reported.
    let output = vesemir_in(dir.path(), &["--config-set", "ssh.host_key_mode=strict", "config", "check"]);
    let all = text(&output);
    assert!(all.contains("vesemir.toml: 1 problem\n"), "{all}");
    assert!(all.contains("ssh.key: cannot read"), "{all}");
}

#[test]
fn bad_deployment_file_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, "k").expect("write");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    std::fs::write(
        dir.path().join("vesemir.toml"),
        format!("[ssh]\nuser = \"x\"\nkey = \"{}\"\nhost_key_mode = \"accept-new\"\n", key.display()),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("d.toml"),
        "application = \"shop\"\nenvironment = \"test\"\nteam = \"web\"\nversion = \"1\"\n[targets]\nhosts = [{ name = \"a\", address = \"127.0.0.1\" }]\n[load_balancer]\nbackend = \"be;web\"\ninstances = [{ address = \"127.0.0.1\", port = 1 }]\n[changeset]\nsteps = [{ name = \"s\", run = \"true\" }]\n",
    )
    .expect("write");
    let output = vesemir_in(dir.path(), &["deploy", "-f", "d.toml", "--concurrency", "0"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("d.toml: 2 problems"), "{all}");
    assert!(all.contains("load_balancer.backend: \"be;web\" is not a valid HAProxy backend name"), "{all}");
    assert!(all.contains("strategy.concurrency: must be at least 1"), "{all}");
}

#[test]
fn help_documents_exit_codes_and_version_prints() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_vesemir")).args(args).output().expect("runs");
    let help = text(&run(&["deploy", "--help"]));
    assert!(help.contains("3  infrastructure unreachable before anything changed"), "{help}");
    let version = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("vesemir {}", env!("CARGO_PKG_VERSION"))
    );
    let completions = run(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_vesemir()"));
}
