//! Controlling a local `vesemir deploy` from a second process through its control socket, on
//! the small lab (two real haproxy instances and an sshd): confirming a canary with
//! `vesemir confirm RUN-ID`, pausing during batch 2 then resuming (no host starts while paused,
//! measured from the events' timestamps), and the refusal of an unconfirmable canary without a
//! terminal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{text, vesemir_in, Lab, HOSTS};
use vesemir_core::ports::ServerStatus;

/// A playbook whose install step takes a second, so that a pause lands while a batch runs.
const SLOW_PLAYBOOK: &str = "\n[playbooks.slow]\nsteps = [{ name = \"install\", run = \"sleep 1 && printf %s {version} > {dir}/{host}.version\", timeout = \"20s\" }]\n\
[playbooks.slow.health]\ncommand = \"test -f {dir}/{host}.version\"\ntimeout = \"5s\"\ninterval = \"200ms\"\n";

/// A deploy running in the background, its stdin not a terminal, its stdout (JSON lines) and
/// stderr read line by line.
struct Deploy {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    seen_stderr: Vec<String>,
}

impl Deploy {
    fn start(lab: &Lab, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
            .args(args)
            .current_dir(lab.dir.path())
            .env_remove("VESEMIR_CONFIG")
            .env_remove("VESEMIR_SERVER")
            .env("VESEMIR_STATE_DIR", lab.dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vesemir starts");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (send, receive) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
            receive
        };
        let stdout = lines(Box::new(child.stdout.take().expect("stdout")));
        let stderr = lines(Box::new(child.stderr.take().expect("stderr")));
        Self { child, stdout, stderr, seen_stderr: Vec::new() }
    }

    /// The run id the deploy prints when it starts.
    fn run_id(&mut self) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no run id on stderr ({e}): {:?}", self.seen_stderr));
            self.seen_stderr.push(line.clone());
            if let Some(rest) = line.strip_prefix("vesemir: run ") {
                return rest.split(':').next().expect("the id").to_owned();
            }
        }
    }

    /// The next event on stdout.
    fn next_event(&mut self) -> serde_json::Value {
        let line = self.stdout.recv_timeout(Duration::from_secs(60)).expect("an event within a minute");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        value.get("event").cloned().unwrap_or(value)
    }

    /// Events up to and including the first that `pick` accepts.
    fn events_until(&mut self, pick: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event();
            let done = pick(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Waits for the end: its exit code, and every line left on stdout and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let status = self.child.wait().expect("waits");
        let stdout: Vec<String> = self.stdout.iter().collect();
        let mut stderr = self.seen_stderr;
        stderr.extend(self.stderr.iter());
        (status.code(), stdout, stderr.join("\n"))
    }
}

fn control(lab: &Lab, args: &[&str]) -> std::process::Output {
    vesemir_in(lab.dir.path(), args)
}

fn elapsed(event: &serde_json::Value) -> Duration {
    humantime::parse_duration(event["elapsed"].as_str().expect("elapsed")).expect("a duration")
}

async fn assert_all_deployed(lab: &Lab, version: &str) {
    for host in HOSTS {
        assert_eq!(lab.version_on(host).as_deref(), Some(version), "{host}");
        let states = lab.status(host).await;
        assert!(states.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100), "{host}: {states:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_waiting_for_confirmation_is_confirmed_from_a_second_process() {
    let lab = Lab::start();
    let mut deploy = Deploy::start(
        &lab,
        &[
            "deploy",
            "-f",
            "deploy.toml",
            "--set",
            "version=2.0.0",
            "--set",
            "strategy.canary.hosts=1",
            "--set",
            "strategy.canary.confirm=true",
            "--confirm-from-socket",
            "-o",
            "json",
        ],
    );
    let run = deploy.run_id();
    let early = control(&lab, &["confirm", &run]);
    // Either the canary is still running (refused: nothing waits yet) or it already waits.
    let waits = |e: &serde_json::Value| e["type"] == "waiting" && e["reason"]["for"] == "canary_confirmation";
    if early.status.code() == Some(2) {
        assert!(text(&early).contains("the canary is not waiting for confirmation"), "{}", text(&early));
        deploy.events_until(waits);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(lab.version_on("web-2"), None, "nothing after the canary before the confirm");
        let confirmed = control(&lab, &["confirm", &run]);
        assert_eq!(confirmed.status.code(), Some(0), "{}", text(&confirmed));
        assert!(text(&confirmed).contains("confirmed"), "{}", text(&confirmed));
    } else {
        assert_eq!(early.status.code(), Some(0), "{}", text(&early));
    }
    let (code, stdout, stderr) = deploy.finish();
    assert_eq!(code, Some(0), "{stderr}\n{}", stdout.join("\n"));
    assert!(stderr.contains(&format!("vesemir confirm {run}")), "{stderr}");
    assert_all_deployed(&lab, "2.0.0").await;
    let gone = control(&lab, &["confirm", &run]);
    assert_eq!(gone.status.code(), Some(2), "the socket went with the deploy: {}", text(&gone));
    assert!(text(&gone).contains(&format!("no local deploy {run} is running here")), "{}", text(&gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_during_batch_two_starts_no_host_until_resume() {
    let lab = Lab::start();
    let config = lab.dir.path().join("vesemir.toml");
    let mut text_config = std::fs::read_to_string(&config).expect("config");
    text_config.push_str(SLOW_PLAYBOOK);
    std::fs::write(&config, text_config).expect("config");
    let mut deploy = Deploy::start(
        &lab,
        &[
            "deploy",
            "-f",
            "deploy.toml",
            "--set",
            "playbook=slow",
            "--set",
            "version=3.0.0",
            "--concurrency",
            "1",
            "--set",
            "strategy.window=batches",
            "-o",
            "json",
        ],
    );
    let run = deploy.run_id();
    let mut events = deploy.events_until(|e| e["type"] == "batch_started" && e["batch"] == 2);
    let paused = control(&lab, &["pause", &run]);
    assert_eq!(paused.status.code(), Some(0), "{}", text(&paused));
    assert!(text(&paused).contains("paused"), "{}", text(&paused));
    events.extend(deploy.events_until(|e| e["type"] == "host_finished" && e["host"] == "web-2"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.version_on("web-3"), None, "web-3 did not start while paused");
    let resumed = control(&lab, &["resume", &run]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let (code, stdout, stderr) = deploy.finish();
    assert_eq!(code, Some(0), "{stderr}");
    for line in &stdout {
        let value: serde_json::Value = serde_json::from_str(line).expect("json");
        if let Some(event) = value.get("event") {
            events.push(event.clone());
        }
    }
    let at = |pick: &dyn Fn(&serde_json::Value) -> bool| -> Vec<Duration> {
        events.iter().filter(|e| pick(e)).map(elapsed).collect()
    };
    let paused = at(&|e| e["type"] == "paused");
    let resumed = at(&|e| e["type"] == "resumed");
    assert_eq!((paused.len(), resumed.len()), (1, 1), "{events:#?}");
    let (paused, resumed) = (paused[0], resumed[0]);
    assert!(resumed - paused >= Duration::from_millis(2900), "paused {paused:?}, resumed {resumed:?}");
    let starts: Vec<(String, Duration)> = events
        .iter()
        .filter(|e| e["type"] == "host_phase" && e["phase"]["phase"] == "connecting")
        .map(|e| (e["host"].as_str().unwrap_or_default().to_owned(), elapsed(e)))
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    for (host, start) in &starts {
        assert!(
            !(*start > paused && *start < resumed),
            "{host} started at {start:?}, paused {paused:?}..{resumed:?}"
        );
    }
    let web3 = starts.iter().find(|(h, _)| h == "web-3").map(|(_, t)| *t);
    assert!(web3.is_some_and(|t| t >= resumed), "web-3 started after the resume: {starts:?}");
    let web2_finished =
        events.iter().find(|e| e["type"] == "host_finished" && e["host"] == "web-2").expect("web-2 finished");
    assert_eq!(web2_finished["outcome"], "succeeded", "web-2 was in flight at the pause and finished");
    assert!(elapsed(web2_finished) > paused, "web-2 finished while paused");
    assert_all_deployed(&lab, "3.0.0").await;
}

#[test]
fn a_canary_that_needs_confirming_without_a_terminal_is_refused_at_once() {
    let lab = Lab::start();
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args([
            "deploy",
            "-f",
            "deploy.toml",
            "--set",
            "strategy.canary.hosts=1",
            "--set",
            "strategy.canary.confirm=true",
        ])
        .current_dir(lab.dir.path())
        .env_remove("VESEMIR_CONFIG")
        .env_remove("VESEMIR_SERVER")
        .env("VESEMIR_STATE_DIR", lab.dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(started.elapsed() < Duration::from_secs(10), "refused at once");
    assert!(all.contains("nothing was changed"), "{all}");
    assert!(all.contains("--confirm-from-socket"), "{all}");
    assert!(all.contains("vesemir confirm RUN-ID"), "{all}");
    assert!(all.contains("strategy.canary.hold"), "{all}");
    assert!(HOSTS.iter().all(|h| lab.version_on(h).is_none()), "no host touched");
    assert!(!lab.dir.path().join("state").join("runs").exists(), "no journal started");

    // With a hold instead, the same deploy runs without a terminal.
    let output = Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args([
            "deploy",
            "-f",
            "deploy.toml",
            "--set",
            "strategy.canary.hosts=1",
            "--set",
            "strategy.canary.hold=1s",
        ])
        .current_dir(lab.dir.path())
        .env_remove("VESEMIR_CONFIG")
        .env_remove("VESEMIR_SERVER")
        .env("VESEMIR_STATE_DIR", lab.dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

/// A deploy run on a pseudo-terminal by util-linux's `script`: its stdin, stdout and stderr are
/// a terminal, as when a person runs it; what it prints is read as it comes, and answers are
/// typed into it.
struct OnTerminal {
    child: Child,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl OnTerminal {
    fn start(lab: &Lab, args: &[&str]) -> Self {
        let command = format!("{} {}", env!("CARGO_BIN_EXE_vesemir"), args.join(" "));
        let mut child = Command::new("script")
            .args(["--quiet", "--flush", "--return", "--command", &command, "/dev/null"])
            .current_dir(lab.dir.path())
            .env_remove("VESEMIR_CONFIG")
            .env_remove("VESEMIR_SERVER")
            .env("VESEMIR_STATE_DIR", lab.dir.path().join("state"))
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("`script` does not start ({e}): install the Debian package bsdutils"));
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("stdout");
        let written = std::sync::Arc::clone(&screen);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                written.lock().expect("screen").push_str(&text);
            }
        });
        Self { child, screen }
    }

    fn screen(&self) -> String {
        self.screen.lock().expect("screen").clone()
    }

    /// Waits until the screen shows `text` (at most a minute).
    fn wait_for(&self, text: &str) {
        let started = std::time::Instant::now();
        while !self.screen().contains(text) {
            assert!(started.elapsed() < Duration::from_secs(60), "{text:?} never shown:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("typed");
        stdin.flush().expect("flushed");
    }

    /// Waits for the end: its exit code and the whole screen.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("waits");
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.screen())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_canary_asks_y_goes_on_and_no_cancels() {
    let lab = Lab::start();
    let args = |version: &str| {
        [
            "deploy",
            "-f",
            "deploy.toml",
            "--set",
            &format!("version={version}"),
            "--set",
            "strategy.canary.hosts=1",
            "--set",
            "strategy.canary.confirm=true",
        ]
        .map(str::to_owned)
    };
    let prompt = "continue with 2 hosts? [y/N]";

    let yes = args("2.0.0");
    let mut deploy = OnTerminal::start(&lab, &yes.iter().map(String::as_str).collect::<Vec<_>>());
    deploy.wait_for(prompt);
    let on_new: Vec<_> = HOSTS.iter().filter(|h| lab.version_on(h).as_deref() == Some("2.0.0")).collect();
    assert_eq!(on_new.len(), 1, "only the canary before the answer: {on_new:?}");
    deploy.type_line("y");
    let (code, screen) = deploy.finish();
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("confirmed: the rest of the hosts start"), "{screen}");
    assert_all_deployed(&lab, "2.0.0").await;

    let no = args("3.0.0");
    let mut deploy = OnTerminal::start(&lab, &no.iter().map(String::as_str).collect::<Vec<_>>());
    deploy.wait_for(prompt);
    deploy.type_line("n");
    let (code, screen) = deploy.finish();
    assert_ne!(code, Some(0), "a cancelled deploy does not exit 0: {screen}");
    assert!(screen.contains("cancelling"), "{screen}");
    let versions: Vec<_> = HOSTS.iter().map(|h| lab.version_on(h)).collect();
    assert_eq!(versions.iter().filter(|v| v.as_deref() == Some("3.0.0")).count(), 1, "{versions:?}");
    assert_eq!(versions.iter().filter(|v| v.as_deref() == Some("2.0.0")).count(), 2, "{versions:?}");
    for host in HOSTS {
        let states = lab.status(host).await;
        assert!(states.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100), "{host}: {states:?}");
    }
}
