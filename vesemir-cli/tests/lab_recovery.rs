//! End to end on the local lab (6 hosts, two HAProxy boxes, a Chef server) under steady load:
//! what a local `vesemir deploy` leaves when it is stopped mid-rollout, and the documented
//! commands that bring every server back. `kill -TERM` (a CI job's cancel) cancels gracefully;
//! `kill -9` leaves servers out, which `vesemir recover` lists and puts back at their own weight,
//! and locks, which `vesemir unlock` breaks; a second SIGTERM aborts and names what it left out;
//! a request with an absurd duration is refused before anything changes. Zero failed requests in
//! every run: the lab's HAProxy has `retries 0`, so a server restarted while in rotation would
//! show up as failed requests (see lab_deploy's `the_lab_counts_requests_...`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vesemir_core::ports::{AdminState, ServerStatus};
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions, LoadReport};

const HOSTS: [&str; 6] = ["web-01", "web-02", "web-03", "web-04", "web-05", "web-06"];

fn lab() -> Lab {
    Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts")
}

fn load() -> LoadOptions {
    LoadOptions { rate: 100, max_duration: Duration::from_secs(120), ..LoadOptions::default() }
}

/// `vesemir` over the lab, with the lab's own state directory for journals (never the user's:
/// `vesemir recover` without a run id acts on every journal there).
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

fn deploy_file(lab: &Lab) -> String {
    lab.deploy_path().display().to_string()
}

/// Runs `vesemir ARGS` to its end.
fn run(lab: &Lab, args: &[&str]) -> Output {
    vesemir(lab).args(args).output().expect("runs vesemir")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// A `vesemir deploy` running in the background, its stdout and stderr read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<(Stream, String)>,
    out: Vec<String>,
    err: Vec<String>,
}

impl Running {
    fn start(lab: &Lab, args: &[&str]) -> Running {
        let mut command = vesemir(lab);
        command
            .args(["deploy", "-f", &deploy_file(lab)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starts vesemir");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, pipe) in
            [(Stream::Out, Box::new(stdout) as Box<dyn Read + Send>), (Stream::Err, Box::new(stderr))]
        {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = sender.send((stream, line));
                }
            });
        }
        Running { child, lines, out: Vec::new(), err: Vec::new() }
    }

    fn take(&mut self, (stream, line): (Stream, String)) {
        match stream {
            Stream::Out => self.out.push(line),
            Stream::Err => self.err.push(line),
        }
    }

    /// Reads its output until `done` holds of what it printed so far (stdout, stderr).
    fn wait_until(&mut self, what: &str, done: impl Fn(&[String], &[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.out, &self.err) {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.take(line),
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("never {what} ({e}):\n{}\n{}", self.out.join("\n"), self.err.join("\n"));
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for its end: the exit code, stdout and stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().expect("vesemir ends");
        // Both readers end at EOF, which closes the channel.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.take(line);
        }
        (status.code(), self.out.join("\n"), self.err.join("\n"))
    }
}

/// The hosts whose last phase in the JSON event lines `out` is a deploy step (their server is
/// in maintenance on every box: the step runs only after that).
fn hosts_in_step(out: &[String]) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    for line in out {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let event = &json["event"];
        let Some(host) = event["host"].as_str() else { continue };
        match event["type"].as_str() {
            Some("host_phase") if event["phase"]["phase"] == "step" => {
                hosts.insert(host.to_owned());
            }
            Some("host_phase" | "host_finished") => {
                hosts.remove(host);
            }
            _ => {}
        }
    }
    hosts
}

/// Whether `out` (text output) shows `host` running step 1.
fn text_in_step(out: &[String], host: &str) -> bool {
    out.iter().any(|l| l.contains(host) && l.contains("step 1 (install)"))
}

/// Asserts `host` is UP, READY, at `weight` on both HAProxy boxes.
fn assert_in_rotation_at(lab: &Lab, host: &str, weight: u32) {
    let states = lab.lb_status(host).expect("HAProxy answers");
    assert_eq!(states.len(), 2, "{host} on both HAProxy boxes");
    assert!(
        states
            .iter()
            .all(|s| s.status == ServerStatus::Up && s.admin == AdminState::Ready && s.weight == weight),
        "{host} is UP at weight {weight} on both boxes: {states:?}"
    );
}

fn assert_in_maintenance(lab: &Lab, host: &str) {
    let states = lab.lb_status(host).expect("HAProxy answers");
    assert_eq!(states.len(), 2, "{host} on both HAProxy boxes");
    assert!(
        states.iter().all(|s| s.status == ServerStatus::Maint),
        "{host} is in MAINT on both boxes: {states:?}"
    );
}

/// The servers some box does not have in rotation (not UP, or at weight 0).
fn servers_out(lab: &Lab) -> Vec<String> {
    HOSTS
        .iter()
        .filter(|h| {
            lab.lb_status(h)
                .map(|states| {
                    states.len() != 2 || states.iter().any(|s| s.status != ServerStatus::Up || s.weight == 0)
                })
                .unwrap_or(true)
        })
        .map(|h| h.to_string())
        .collect()
}

/// `vesemir recover --list -o json`: its runs.
fn listed_runs(lab: &Lab) -> Vec<serde_json::Value> {
    let listed = run(lab, &["recover", "--list", "-o", "json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed));
    let json: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("recover --list -o json is JSON");
    json["runs"].as_array().cloned().unwrap_or_else(|| panic!("no runs array: {json}"))
}

/// `vesemir locks` of the lab's deployment file.
fn locks(lab: &Lab) -> String {
    let output = run(lab, &["locks", "-f", &deploy_file(lab)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    text(&output)
}

/// Stops the load and says what it saw.
fn finish_load(traffic: vesemir_examples::lab::LoadRun, test: &str, started: Instant) -> LoadReport {
    std::thread::sleep(Duration::from_millis(300));
    let report = traffic.finish().expect("the load generator reports");
    eprintln!(
        "{test}: {} requests served, {} failed, by version {:?}; test took {:.1}s",
        report.served,
        report.failed,
        report.by_version,
        started.elapsed().as_secs_f64()
    );
    report
}

/// Sets `host`'s weight on every HAProxy box, as an operator would.
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

// On the original code SIGTERM killed the process (exit 143, no summary, web-01 and web-02 left
// in MAINT): the exit code and rotation asserts below fail there.
#[test]
fn sigterm_mid_rollout_cancels_gracefully_every_server_back_and_nothing_to_recover() {
    let started = Instant::now();
    let lab = lab();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let mut deploy = Running::start(&lab, &[]);
    deploy.wait_until("the first batch ran its step", |out, _| {
        text_in_step(out, "web-01") && text_in_step(out, "web-02")
    });
    // Both hosts of the first batch are out of rotation now (the step takes over a second).
    assert_in_maintenance(&lab, "web-01");
    assert_in_maintenance(&lab, "web-02");
    deploy.signal("TERM");
    let signalled = Instant::now();
    let (code, out, err) = deploy.finish();
    let all = format!("{out}\n{err}");
    eprintln!("SIGTERM: vesemir ended {:.1}s after the signal", signalled.elapsed().as_secs_f64());
    assert_eq!(code, Some(1), "a cancelled deploy exits 1 (not 143, killed): {all}");
    assert!(err.contains("vesemir: cancelling (SIGTERM)"), "{all}");
    assert!(out.contains("Deployment cancelled"), "the summary: {all}");
    assert!(out.contains("2 succeeded, 0 failed, 0 unreachable, 0 skipped, 4 cancelled"), "{all}");
    assert!(!all.contains("Out of rotation now"), "{all}");

    // The hosts in flight finished and went back; no other host was touched. Both boxes agree.
    assert_eq!(servers_out(&lab), Vec::<String>::new(), "{all}");
    for host in HOSTS {
        assert_in_rotation_at(&lab, host, 100);
        let expected = if ["web-01", "web-02"].contains(&host) { "2.0.0" } else { "1.0.0" };
        assert_eq!(lab.served_version(host).ok().as_deref(), Some(expected), "{host} serves");
    }
    assert_eq!(listed_runs(&lab), Vec::<serde_json::Value>::new(), "nothing left to recover");
    let plain = run(&lab, &["recover", "--list"]);
    assert!(text(&plain).contains("Nothing to recover"), "{}", text(&plain));
    assert_eq!(locks(&lab).matches(" free").count(), 6, "every lock given back");

    let report = finish_load(traffic, "SIGTERM", started);
    assert_eq!(report.failed, 0, "{report}\n{all}");
    assert!(report.by_version.get("2.0.0").is_some_and(|n| *n > 0), "{report}");
}

// On the original code nothing journaled the servers a killed deploy took out: `recover` did
// not exist (and nothing else found web-01 and web-02 in MAINT), so every assert from
// `recover --list` on fails there.
#[test]
fn kill_9_mid_rollout_then_recover_and_unlock_bring_every_server_back_at_its_own_weight_under_load() {
    let started = Instant::now();
    let lab = lab();
    // An operator runs web-02 at half weight: that is its state to come back to, not 100.
    set_weight(&lab, "web-02", 50);
    assert_in_rotation_at(&lab, "web-02", 50);
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));

    let mut deploy = Running::start(&lab, &["-o", "json"]);
    deploy.wait_until("the first batch ran its step", |out, _| {
        hosts_in_step(out) == BTreeSet::from(["web-01".to_owned(), "web-02".to_owned()])
    });
    assert_in_maintenance(&lab, "web-01");
    assert_in_maintenance(&lab, "web-02");
    let pid = deploy.child.id();
    deploy.child.kill().expect("kill -9 of our own child");
    let killed = Instant::now();
    let (code, out, err) = deploy.finish();
    assert_eq!(code, None, "killed by SIGKILL:\n{out}\n{err}");

    // web-01 and web-02 stay out, in MAINT on both boxes; the others were never touched.
    assert_eq!(servers_out(&lab), ["web-01", "web-02"]);
    assert_in_maintenance(&lab, "web-01");
    assert_in_maintenance(&lab, "web-02");

    // The journal names exactly them, with their original state on each box.
    let runs = listed_runs(&lab);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let listed = &runs[0];
    assert_eq!(listed["state"], "interrupted", "{listed}");
    assert_eq!(listed["header"]["backend"], lab.backend().expect("backend").name.as_str(), "{listed}");
    assert_eq!(listed["header"]["version"], "2.0.0", "{listed}");
    let servers = listed["servers"].as_array().expect("servers");
    // In the order the run first changed them: the two hosts of a batch run at once.
    let names: BTreeSet<&str> = servers.iter().filter_map(|s| s["server"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["web-01", "web-02"]), "{listed}");
    assert_eq!(servers.len(), 2, "{listed}");
    let boxes: BTreeSet<String> = lab.haproxy().iter().map(|h| h.address.to_string()).collect();
    for server in servers {
        let name = server["server"].as_str().expect("a name");
        assert_eq!(server["host"], name, "{server}");
        assert_eq!(server["reason"], "interrupted", "{server}");
        let weight = if name == "web-02" { 50 } else { 100 };
        let original = server["original"].as_array().expect("original");
        let on: BTreeSet<String> =
            original.iter().filter_map(|o| o["instance"]["address"].as_str().map(str::to_owned)).collect();
        assert_eq!(on, boxes, "its state on both boxes: {server}");
        assert!(
            original.iter().all(|o| o["admin"] == "ready" && o["status"] == "up" && o["weight"] == weight),
            "{name} was READY, UP at weight {weight}: {server}"
        );
    }
    let plain = text(&run(&lab, &["recover", "--list"]));
    assert!(plain.contains("interrupted (the process died)"), "{plain}");
    assert!(plain.contains("web-01 (host web-01): in flight"), "{plain}");
    assert!(plain.contains("web-02 (host web-02): in flight"), "{plain}");

    // The killed run still holds every host's lock (it took all six before the first change):
    // what a user meets first is a deploy refused, naming the command that breaks them.
    let held = locks(&lab);
    assert_eq!(held.matches(&format!("pid {pid})")).count(), 6, "the killed run's locks: {held}");
    let refused = run(&lab, &["deploy", "-f", &deploy_file(&lab)]);
    let refusal = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{refusal}");
    assert!(refusal.contains(&format!("vesemir unlock -f {}", deploy_file(&lab))), "{refusal}");
    assert!(refusal.contains("See `vesemir recover --list`"), "{refusal}");
    let file = deploy_file(&lab);
    let mut unlock = vec!["unlock", "-f", &file];
    unlock.extend(HOSTS);
    let unlocked = run(&lab, &unlock);
    assert_eq!(unlocked.status.code(), Some(0), "{}", text(&unlocked));
    assert_eq!(text(&unlocked).matches("unlocked; it was held by deployment local-").count(), 6);
    assert_eq!(locks(&lab).matches(" free").count(), 6);

    // Then a deploy refused because web-01 and web-02 are out of rotation, naming the journal
    // that left them out and the command that puts them back.
    let refused = run(&lab, &["deploy", "-f", &deploy_file(&lab)]);
    let refusal = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{refusal}");
    assert!(refusal.contains("web-01 (host web-01): MAINT"), "{refusal}");
    assert!(refusal.contains("nothing was changed"), "{refusal}");
    // (Before the fix of this test's commit it said only "someone or something else took them out".)
    let run_id = listed["run"].as_str().expect("a run id");
    assert!(refusal.contains(&format!("a deploy that was killed (run {run_id}) left servers")), "{refusal}");
    assert!(refusal.contains(&format!("`vesemir recover {run_id}` puts them back")), "{refusal}");
    assert_eq!(servers_out(&lab), ["web-01", "web-02"]);

    // `vesemir recover` puts the servers back (health gate first), at their own weight.
    let recovering = Instant::now();
    let recovered = run(&lab, &["recover"]);
    let said = text(&recovered);
    eprintln!(
        "kill -9: recover ran {:.1}s after the kill and took {:.1}s",
        recovering.duration_since(killed).as_secs_f64(),
        recovering.elapsed().as_secs_f64()
    );
    assert_eq!(recovered.status.code(), Some(0), "{said}");
    assert!(said.contains("web-01 (host web-01): healthy, back to its original state"), "{said}");
    assert!(said.contains("web-02 (host web-02): healthy, back to its original state"), "{said}");
    assert!(said.contains("every server is back"), "{said}");
    assert_eq!(servers_out(&lab), Vec::<String>::new(), "{said}");
    for host in HOSTS {
        assert_in_rotation_at(&lab, host, if host == "web-02" { 50 } else { 100 });
    }
    assert_eq!(listed_runs(&lab), Vec::<serde_json::Value>::new(), "nothing left to recover");

    // A following deploy runs to its end: the fleet on one version, web-02 still at half weight.
    let again = run(&lab, &["deploy", "-f", &deploy_file(&lab)]);
    let all = text(&again);
    assert_eq!(again.status.code(), Some(0), "{all}");
    assert!(all.contains("6 succeeded, 0 failed"), "{all}");
    assert!(!all.contains("vesemir recover"), "no journal left a server out: {all}");
    for host in HOSTS {
        assert_in_rotation_at(&lab, host, if host == "web-02" { 50 } else { 100 });
        assert_eq!(lab.served_version(host).ok().as_deref(), Some("2.0.0"), "{host} serves");
    }
    let report = finish_load(traffic, "kill -9", started);
    assert_eq!(report.failed, 0, "the load ran through the kill and the recovery: {report}\n{all}");
}

// On the original code this request was accepted and `Instant + Duration` panicked inside the
// rollout after the first batch: exit 2 and "nothing changed" fail there.
#[test]
fn a_pause_beyond_seven_days_is_refused_naming_the_field_and_nothing_changes() {
    let started = Instant::now();
    let lab = lab();
    let deploy = std::fs::read_to_string(lab.deploy_path()).expect("the lab's deployment file");
    assert!(deploy.trim_end().ends_with("max_failures = 0"), "[strategy] is its last table: {deploy}");
    let huge = lab.dir().join("huge-pause.toml");
    std::fs::write(&huge, format!("{deploy}pause_between_batches = \"10000000000000000000s\"\n"))
        .expect("writes");
    let huge = huge.display().to_string();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));

    let refused = run(&lab, &["deploy", "-f", &huge]);
    let all = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{all}");
    assert!(
        all.contains("strategy.pause_between_batches: 10000000000000000000s is above the limit of 7d"),
        "{all}"
    );
    // The same through --set, and `plan` says so too.
    for args in [
        &[
            "deploy",
            "-f",
            &deploy_file(&lab),
            "--set",
            "strategy.pause_between_batches=10000000000000000000s",
        ][..],
        &["plan", "-f", &huge],
    ] {
        let output = run(&lab, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(text(&output).contains("strategy.pause_between_batches: "), "{}", text(&output));
        assert!(text(&output).contains("above the limit of 7d"), "{}", text(&output));
    }

    // Nothing changed: every server in rotation at full weight, every host on its version, no
    // lock taken, no journal written.
    assert_eq!(servers_out(&lab), Vec::<String>::new());
    for host in HOSTS {
        assert_in_rotation_at(&lab, host, 100);
        assert_eq!(lab.served_version(host).ok().as_deref(), Some("1.0.0"), "{host} serves");
    }
    assert_eq!(locks(&lab).matches(" free").count(), 6);
    assert_eq!(listed_runs(&lab), Vec::<serde_json::Value>::new());
    let report = finish_load(traffic, "huge pause", started);
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.by_version.keys().collect::<Vec<_>>(), ["1.0.0"], "{report}");
}

// On the original code the first SIGTERM already killed the process (exit 143), nothing named
// the servers it left out and there was no `vesemir recover`: the stderr and recover asserts
// fail there.
#[test]
fn a_second_sigterm_aborts_names_the_servers_left_out_and_recover_puts_them_back() {
    let started = Instant::now();
    let lab = lab();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    let mut deploy = Running::start(&lab, &[]);
    deploy.wait_until("the first batch ran its step", |out, _| {
        text_in_step(out, "web-01") && text_in_step(out, "web-02")
    });
    deploy.signal("TERM");
    deploy.wait_until("cancelled on the first SIGTERM", |_, err| {
        err.iter().any(|l| l.contains("vesemir: cancelling (SIGTERM)"))
    });
    deploy.signal("TERM");
    let second = Instant::now();
    let (code, out, err) = deploy.finish();
    let aborted_in = second.elapsed();
    let all = format!("{out}\n{err}");
    eprintln!("second SIGTERM: vesemir ended {:.2}s after it", aborted_in.as_secs_f64());
    assert_eq!(code, Some(1), "{all}");
    assert!(err.contains("vesemir: stopping at once (SIGTERM)"), "{all}");
    // It stopped at once: the hosts in flight did not finish (they stay in MAINT, below).
    assert!(out.contains("0 succeeded, 0 failed, 0 unreachable, 0 skipped, 6 cancelled"), "{all}");
    let left =
        out.lines().find(|l| l.starts_with("Out of rotation now: ")).unwrap_or_else(|| panic!("{all}"));
    assert!(left.contains("web-01") && left.contains("web-02"), "the summary names them: {all}");
    assert!(
        err.contains("vesemir: 2 server(s) left out of rotation are in journal ")
            && (err.contains(": web-01, web-02. See `vesemir recover --list`")
                || err.contains(": web-02, web-01. See `vesemir recover --list`")),
        "stderr names the servers left out: {all}"
    );
    assert_eq!(servers_out(&lab), ["web-01", "web-02"], "{all}");
    assert_in_maintenance(&lab, "web-01");
    assert_in_maintenance(&lab, "web-02");
    assert_eq!(locks(&lab).matches(" free").count(), 6, "an abort gives every lock back");

    let runs = listed_runs(&lab);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let names: Vec<&str> =
        runs[0]["servers"].as_array().expect("servers").iter().filter_map(|s| s["server"].as_str()).collect();
    assert!(names == ["web-01", "web-02"] || names == ["web-02", "web-01"], "{runs:?}");
    let recovered = run(&lab, &["recover"]);
    let said = text(&recovered);
    assert_eq!(recovered.status.code(), Some(0), "{said}");
    assert!(said.contains("every server is back"), "{said}");
    assert_eq!(servers_out(&lab), Vec::<String>::new(), "{said}");
    for host in HOSTS {
        assert_in_rotation_at(&lab, host, 100);
    }
    assert_eq!(listed_runs(&lab), Vec::<serde_json::Value>::new());
    let report = finish_load(traffic, "second SIGTERM", started);
    assert_eq!(report.failed, 0, "{report}\n{all}");
}

// Found by this file: the journal is opened after the locks are taken, and a journal that cannot
// be written refused the deploy ("nothing was changed") leaving every host locked for an hour.
#[test]
fn a_journal_that_cannot_be_written_refuses_the_deploy_and_gives_every_lock_back() {
    let started = Instant::now();
    let lab = lab();
    let traffic = lab.start_load(load());
    std::thread::sleep(Duration::from_millis(500));
    // A state directory under a regular file: nothing can be created there.
    let output = vesemir(&lab)
        .env("VESEMIR_STATE_DIR", lab.deploy_path().join("state"))
        .args(["deploy", "-f", &deploy_file(&lab)])
        .output()
        .expect("runs vesemir");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(
        all.contains("nothing was changed: the journal of load balancer changes cannot be written"),
        "{all}"
    );
    assert_eq!(locks(&lab).matches(" free").count(), 6, "every lock given back: {all}");
    assert_eq!(servers_out(&lab), Vec::<String>::new());
    for host in HOSTS {
        assert_in_rotation_at(&lab, host, 100);
        assert_eq!(lab.served_version(host).ok().as_deref(), Some("1.0.0"), "{host} serves");
    }
    // So the next deploy, with a writable journal, runs at once.
    let again = run(&lab, &["deploy", "-f", &deploy_file(&lab)]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let report = finish_load(traffic, "unwritable journal", started);
    assert_eq!(report.failed, 0, "{report}");
}
