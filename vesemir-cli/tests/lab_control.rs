//! Canary confirm and pause/resume from a second process on the local lab (4 hosts with their
//! own sshd and app, two HAProxy boxes, a Chef server) under steady load, locally (the deploy's
//! control socket) and through the server: nothing after the canary starts before the confirm,
//! no host starts while paused (measured from the events' timestamps), every host ends on the
//! new version in rotation, and not one request fails.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Served;
use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};
use vesemir_testkit::process::free_port;

const TOKEN: &str = "lab-team-demo-token";
const HOSTS: [&str; 4] = ["web-01", "web-02", "web-03", "web-04"];
/// A canary of one host waiting for a person, then strict batches of one host.
const CANARY: [&str; 8] = [
    "--set",
    "strategy.canary.hosts=1",
    "--set",
    "strategy.canary.confirm=true",
    "--set",
    "strategy.window=batches",
    "--set",
    "strategy.concurrency=1",
];

fn lab() -> Lab {
    Lab::start(LabOptions { hosts: 4, concurrency: 1, ..LabOptions::default() }).expect("the lab starts")
}

fn load() -> LoadOptions {
    LoadOptions { rate: 100, max_duration: Duration::from_secs(180), ..LoadOptions::default() }
}

/// `vesemir` for the lab: locally (its config and state directory), or as a client of `server`.
fn vesemir(lab: &Lab, server: Option<&Served>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
    command.current_dir(lab.dir()).env_remove("VESEMIR_CONFIG").env("VESEMIR_REQUESTED_BY", "lab-test");
    match server {
        Some(served) => {
            command.env("VESEMIR_SERVER", &served.url).env("VESEMIR_TOKEN", TOKEN);
        }
        None => {
            command
                .arg("--config")
                .arg(lab.config_path())
                .env_remove("VESEMIR_SERVER")
                .env("VESEMIR_STATE_DIR", lab.dir().join("state"));
        }
    }
    command
}

fn run(lab: &Lab, server: Option<&Served>, args: &[&str]) -> Output {
    vesemir(lab, server).args(args).output().expect("runs vesemir")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Starts the server with the lab's two-team configuration on a free port.
fn serve(lab: &Lab) -> Served {
    let port = free_port();
    let config = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let path = lab.dir().join("vesemir-server-control.toml");
    std::fs::write(&path, config.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))).expect("written");
    let child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .arg("--config")
        .arg(lab.config_path())
        .args(["serve", "--server-config"])
        .arg(&path)
        .current_dir(lab.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts vesemir serve");
    Served::listening(child, port)
}

/// A deploy running in the background with `-o json`: its events as they come.
struct Deploy {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    events: Vec<serde_json::Value>,
    stderr: Vec<String>,
}

impl Deploy {
    fn start(lab: &Lab, server: Option<&Served>, extra: &[&str]) -> Self {
        let file = lab.deploy_path().display().to_string();
        let mut child = vesemir(lab, server)
            .args(["deploy", "-f", &file, "-o", "json"])
            .args(CANARY)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts vesemir deploy");
        let (send, lines) = mpsc::channel();
        let pipes: [(bool, Box<dyn Read + Send>); 2] = [
            (true, Box::new(child.stdout.take().expect("stdout"))),
            (false, Box::new(child.stderr.take().expect("stderr"))),
        ];
        for (out, pipe) in pipes {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = send.send((out, line));
                }
            });
        }
        Deploy { child, lines, events: Vec::new(), stderr: Vec::new() }
    }

    fn take(&mut self, (out, line): (bool, String)) {
        if !out {
            self.stderr.push(line);
        } else if let Some(event) =
            serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v.get("event").cloned())
        {
            self.events.push(event);
        }
    }

    /// Reads until `done` holds of the events and stderr lines so far.
    fn until(&mut self, what: &str, done: impl Fn(&[serde_json::Value], &[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.events, &self.stderr) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(e) => panic!("{what}: {e}\n{:#?}\n{}", self.events, self.stderr.join("\n")),
            }
        }
    }

    fn finish(mut self) -> (Option<i32>, Vec<serde_json::Value>, String) {
        let status = self.child.wait().expect("the deploy ends");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.take(line);
        }
        (status.code(), self.events, self.stderr.join("\n"))
    }
}

fn elapsed(event: &serde_json::Value) -> Duration {
    humantime::parse_duration(event["elapsed"].as_str().expect("elapsed")).expect("a duration")
}

/// The whole scenario, locally (`server` none) or through the server: the canary waits; a
/// second process confirms; batch 2 starts and a second process pauses; no host starts for 2 s;
/// resume; every host on 2.0.0 in rotation; zero failed requests.
fn confirm_then_pause_during_batch_two(lab: &Lab, server: Option<&Served>) {
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let mut deploy =
        Deploy::start(lab, server, if server.is_none() { &["--confirm-from-socket"] } else { &[] });
    let waits = |e: &serde_json::Value| e["type"] == "waiting" && e["reason"]["for"] == "canary_confirmation";
    deploy.until("the canary waits", |events, _| events.iter().any(waits));
    let id = match server {
        Some(_) => "1".to_owned(),
        None => deploy
            .stderr
            .iter()
            .find_map(|l| l.strip_prefix("vesemir: run ").and_then(|r| r.split(':').next()))
            .expect("the run id on stderr")
            .to_owned(),
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.served_version("web-02").ok().as_deref(),
        Some("1.0.0"),
        "nothing starts before the confirm"
    );

    let confirmed = run(lab, server, &["confirm", &id]);
    assert_eq!(confirmed.status.code(), Some(0), "{}", text(&confirmed));
    deploy.until("batch 2 starts", |events, _| {
        events.iter().any(|e| e["type"] == "batch_started" && e["batch"] == 2)
    });
    let paused = run(lab, server, &["pause", &id]);
    assert_eq!(paused.status.code(), Some(0), "{}", text(&paused));
    deploy.until("the pause shows", |events, _| events.iter().any(|e| e["type"] == "paused"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.served_version("web-03").ok().as_deref(), Some("1.0.0"), "web-03 waits while paused");
    let resumed = run(lab, server, &["resume", &id]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));

    let (code, events, stderr) = deploy.finish();
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    let all = format!("{events:#?}\n{stderr}");
    assert_eq!(code, Some(0), "{all}");
    let at = |kind: &str| events.iter().filter(|e| e["type"] == kind).map(elapsed).collect::<Vec<_>>();
    let (paused, resumed) = (at("paused"), at("resumed"));
    assert_eq!((paused.len(), resumed.len()), (1, 1), "{all}");
    let (paused, resumed) = (paused[0], resumed[0]);
    assert!(resumed - paused >= Duration::from_millis(1900), "paused {paused:?}, resumed {resumed:?}");
    let starts: Vec<(String, Duration)> = events
        .iter()
        .filter(|e| e["type"] == "host_phase" && e["phase"]["phase"] == "connecting")
        .map(|e| (e["host"].as_str().unwrap_or_default().to_owned(), elapsed(e)))
        .collect();
    assert_eq!(starts.len(), 4, "{starts:?}");
    for (host, start) in &starts {
        assert!(
            !(*start > paused && *start < resumed),
            "{host} started at {start:?} while paused {paused:?}..{resumed:?}"
        );
    }
    let waited = events.iter().find(|e| waits(e)).map(elapsed).expect("the canary waited");
    for (host, start) in starts.iter().filter(|(h, _)| h != "web-01") {
        assert!(
            *start > waited,
            "{host} started at {start:?}, before the canary's confirm (waiting from {waited:?})"
        );
    }
    for host in HOSTS {
        assert_eq!(lab.served_version(host).ok().as_deref(), Some("2.0.0"), "{host} serves\n{all}");
        let states = lab.lb_status(host).expect("HAProxy answers");
        assert!(states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100), "{host}: {states:?}");
    }
    eprintln!(
        "{} requests served, {} failed, by version {:?}",
        report.served, report.failed, report.by_version
    );
    assert_eq!(report.failed, 0, "{report}\n{all}");
}

#[test]
fn locally_a_second_process_confirms_the_canary_then_pauses_and_resumes_under_load() {
    let lab = lab();
    confirm_then_pause_during_batch_two(&lab, None);
}

#[test]
fn through_the_server_a_second_process_confirms_the_canary_then_pauses_and_resumes_under_load() {
    let lab = lab();
    let served = serve(&lab);
    confirm_then_pause_during_batch_two(&lab, Some(&served));
}
