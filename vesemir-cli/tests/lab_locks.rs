//! End to end on the local lab under steady load: one rollout per server across processes. Two
//! `vesemir deploy` at once (the second refused, or waiting with `--lock-wait`), a CLI deploy
//! beside `vesemir serve`, and `vesemir unlock` of the locks a `kill -9`ed deployer left.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Served;
use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};
use vesemir_testkit::process::free_port;

const TOKEN: &str = "lab-team-demo-token";

fn lab() -> Lab {
    Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts")
}

fn load() -> LoadOptions {
    LoadOptions { rate: 100, max_duration: Duration::from_secs(300), ..LoadOptions::default() }
}

fn vesemir(lab: &Lab) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
    command
        .arg("--config")
        .arg(lab.config_path())
        .current_dir(lab.dir())
        .env_remove("VESEMIR_CONFIG")
        .env_remove("VESEMIR_SERVER")
        // The lab's own journals: not the user's state directory, which every run would share.
        .env("VESEMIR_STATE_DIR", lab.dir().join("state"))
        .env("VESEMIR_REQUESTED_BY", "lab-test");
    command
}

fn deploy_file(lab: &Lab) -> String {
    lab.deploy_path().display().to_string()
}

/// `vesemir deploy` of `version` with `args`, to its end.
fn deploy(lab: &Lab, version: &str, args: &[&str]) -> Output {
    let mut command = vesemir(lab);
    command.args(["deploy", "-f", &deploy_file(lab), "--set", &format!("version={version}")]).args(args);
    command.output().expect("runs vesemir")
}

/// A `vesemir deploy` of `version` running in the background, and its stdout lines.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(lab: &Lab, version: &str, args: &[&str]) -> Running {
        let mut command = vesemir(lab);
        command
            .args(["deploy", "-f", &deploy_file(lab), "--set", &format!("version={version}")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starts vesemir");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits until a line of its output contains `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.seen.iter().any(|l| l.contains(text)) {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("no {text:?} in the output ({e}):\n{}", self.seen.join("\n"));
                }
            }
        }
    }

    /// Waits for the end: exit code and all its output.
    fn finish(mut self) -> (Option<i32>, String) {
        let stderr = self.child.stderr.take();
        let status = self.child.wait().expect("vesemir ends");
        let mut err = String::new();
        if let Some(mut stderr) = stderr {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        }
        std::thread::sleep(Duration::from_millis(100));
        self.seen.extend(self.lines.try_iter());
        (status.code(), format!("{}\n{err}", self.seen.join("\n")))
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn assert_fleet_on(lab: &Lab, version: &str) {
    for host in lab.hosts() {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some(version), "{} serves", host.name);
        let states = lab.lb_status(&host.name).expect("HAProxy answers");
        assert!(
            states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100),
            "{} is UP at weight 100 on both boxes: {states:?}",
            host.name
        );
    }
}

/// `vesemir locks` of the lab's deployment file.
fn locks(lab: &Lab) -> String {
    let output = vesemir(lab).args(["locks", "-f", &deploy_file(lab)]).output().expect("runs vesemir");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    text(&output)
}

#[test]
fn two_deploys_at_once_the_second_is_refused_naming_the_first_and_the_fleet_ends_on_the_first() {
    let lab = lab();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let mut first = Running::start(&lab, "2.0.0", &[]);
    first.wait_for("step 1 (install)");

    let second = deploy(&lab, "3.0.0", &[]);
    let refused = text(&second);
    assert_eq!(second.status.code(), Some(2), "{refused}");
    // Every host is named, in the order the inventory (Chef search) gave them.
    assert!(refused.contains("nothing was changed: web-0"), "{refused}");
    assert!(refused.contains("web-01 is locked by deployment local-"), "{refused}");
    assert!(refused.contains("of shop/lab (lab-test on "), "names who and where: {refused}");
    assert!(
        refused.contains("wait with --lock-wait 10m, or if that deployment is dead: vesemir unlock -f "),
        "{refused}"
    );
    let hint = format!("vesemir unlock -f {} ", deploy_file(&lab));
    let start = refused.find(&hint).unwrap_or_else(|| panic!("{refused}")) + hint.len();
    let mut named: Vec<&str> = refused[start..].split_whitespace().collect();
    named.sort_unstable();
    assert_eq!(named, ["web-01", "web-02", "web-03", "web-04", "web-05", "web-06"], "{refused}");

    let (code, all) = first.finish();
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    assert_eq!(code, Some(0), "{all}");
    assert_fleet_on(&lab, "2.0.0");
    assert_eq!(report.by_version.get("3.0.0"), None, "the refused deploy changed nothing: {report}");
    assert_eq!(report.failed, 0, "{report}\n{all}");
    assert!(locks(&lab).matches(" free").count() == 6, "every lock given back");
}

#[test]
fn with_lock_wait_the_second_deploy_waits_then_runs_and_the_fleet_ends_on_its_version() {
    let lab = lab();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let mut first = Running::start(&lab, "2.0.0", &[]);
    first.wait_for("step 1 (install)");
    let second = Running::start(&lab, "3.0.0", &["--lock-wait", "2m"]);

    let (first_code, first_all) = first.finish();
    let (second_code, second_all) = second.finish();
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    assert_eq!(first_code, Some(0), "{first_all}");
    assert_eq!(second_code, Some(0), "{second_all}");
    assert!(second_all.contains("vesemir: waiting for host locks"), "{second_all}");
    assert!(second_all.contains("is locked by deployment local-"), "{second_all}");
    assert!(second_all.contains("6 succeeded, 0 failed"), "{second_all}");
    assert_fleet_on(&lab, "3.0.0");
    assert_eq!(report.failed, 0, "{report}\n{first_all}\n{second_all}");
}

/// Starts `vesemir serve` over the lab with the lab's generated two-team configuration (team
/// `lab` deploys `shop` through the catalog, token `lab-ci`), on a free port.
fn serve(lab: &Lab) -> Served {
    let port = free_port();
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let server_config = lab.dir().join("vesemir-server-test.toml");
    std::fs::write(&server_config, text.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")))
        .expect("server config");
    let child = vesemir(lab)
        .arg("serve")
        .arg("--server-config")
        .arg(&server_config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts vesemir serve");
    Served::listening(child, port)
}

#[test]
fn a_cli_deploy_beside_the_server_on_the_same_hosts_is_refused_naming_the_servers_deployment() {
    let lab = lab();
    let served = serve(&lab);
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let through_server = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(["deploy", "-f", &deploy_file(&lab), "--set", "version=2.0.0"])
        .current_dir(lab.dir())
        .env("VESEMIR_SERVER", &served.url)
        .env("VESEMIR_TOKEN", TOKEN)
        .env_remove("VESEMIR_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts vesemir deploy --server");
    // Until the server's deployment holds the hosts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = locks(&lab);
        if held.contains("locked by deployment 1 of shop/lab (lab-ci on vesemir serve on ") {
            break;
        }
        assert!(Instant::now() < deadline, "the server's deployment never locked the hosts:\n{held}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let local = deploy(&lab, "3.0.0", &[]);
    let refused = text(&local);
    assert_eq!(local.status.code(), Some(2), "{refused}");
    assert!(
        refused.contains("is locked by deployment 1 of shop/lab (lab-ci on vesemir serve on "),
        "{refused}"
    );

    let output = through_server.wait_with_output().expect("the client ends");
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_fleet_on(&lab, "2.0.0");
    assert_eq!(report.failed, 0, "{report}");
}

#[test]
fn the_locks_of_a_killed_deployer_refuse_others_until_vesemir_unlock_breaks_them() {
    let lab = lab();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let mut killed = Running::start(&lab, "2.0.0", &[]);
    killed.wait_for("step 1 (install)");
    let status = Command::new("kill").arg("-KILL").arg(killed.child.id().to_string()).status().expect("kill");
    assert!(status.success());
    let (code, _) = killed.finish();
    assert_eq!(code, None, "killed by a signal");

    let held = locks(&lab);
    assert_eq!(held.matches("locked by deployment local-").count(), 6, "{held}");
    let refused = deploy(&lab, "3.0.0", &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));

    let hosts: Vec<String> = lab.hosts().iter().map(|h| h.name.clone()).collect();
    let mut unlock = vesemir(&lab);
    unlock.args(["unlock", "-f", &deploy_file(&lab)]).args(&hosts);
    let unlocked = unlock.output().expect("runs vesemir");
    let said = text(&unlocked);
    assert_eq!(unlocked.status.code(), Some(0), "{said}");
    assert_eq!(said.matches("unlocked; it was held by deployment local-").count(), 6, "{said}");
    assert!(said.contains("web-01: unlocked; it was held by deployment local-"), "{said}");
    assert_eq!(locks(&lab).matches(" free").count(), 6);

    let again = vesemir(&lab).args(["unlock", "-f", &deploy_file(&lab), "web-01"]).output().expect("runs");
    assert!(text(&again).contains("web-01: was not locked"), "{}", text(&again));
    let unknown = vesemir(&lab).args(["unlock", "-f", &deploy_file(&lab), "web-99"]).output().expect("runs");
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));

    std::thread::sleep(Duration::from_millis(300));
    let report = traffic.finish().expect("the load generator reports");
    assert_eq!(report.failed, 0, "{report}");
}
