//! Two `vesemir serve` instances on one PostgreSQL database, behind an HAProxy of their own for
//! the API (`option httpchk GET /readyz`), on the local lab under steady load. The client only
//! talks to that HAProxy. The instance running a deployment is killed (SIGKILL), or cut from the
//! database, while hosts are in their steps; the other takes the deployment over once its lease
//! expired, checks the hosts that were in flight, and finishes the rollout. Every host ends on the
//! new version and in rotation (as the lab's HAProxy says), no user request fails, and the one
//! record shows the handover. On the cut, a probe in the step (each run appends who ran it on
//! which host, and when) and the lab's HAProxy polled all along show that no two instances ever
//! drove one host.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Served;
use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};
use vesemir_testkit::haproxy::HaproxyInstance;
use vesemir_testkit::postgres::Postgres;
use vesemir_testkit::process::free_port;

const TOKEN: &str = "lab-team-demo-token";
const LEASE: Duration = Duration::from_secs(2);

/// Starts instance `name` of the lab's server on `database`, on a free port. Its steps take 2 s
/// more (room to kill or cut it while hosts are in them), and each run appends
/// `<name> start|change|end <ns since the epoch>` to `drivers-<host>.log` in the lab's directory
/// (`change`: the 2 s are over, the lab's step begins).
fn serve(lab: &Lab, database: &str, name: &str) -> Served {
    let port = free_port();
    let probe = lab.dir().join("drivers-{host}.log").display().to_string();
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("database = ") {
                format!("database = \"{database}\"")
            } else {
                line.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
                    .replace(
                        "run = \"bash ",
                        &format!(
                            "run = \"echo {name} start $(date +%s%N) >> {probe} && sleep 2 && \
                             echo {name} change $(date +%s%N) >> {probe} && bash "
                        ),
                    )
                    .replace(
                        "{version}\", timeout",
                        &format!("{{version}} && echo {name} end $(date +%s%N) >> {probe}\", timeout"),
                    )
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains(" change $(date") && text.contains(" end $(date"), "the step probe is in:\n{text}");
    let text = format!("{text}\n\n[cluster]\ninstance = \"{name}\"\nlease = \"{}s\"\n", LEASE.as_secs());
    let server_config = lab.dir().join(format!("vesemir-server-{name}.toml"));
    std::fs::write(&server_config, text).expect("server config");
    Served::start(lab.config_path(), lab.dir(), &server_config, port)
}

/// An HAProxy in front of the instances' API: health checks on `/readyz` every 200 ms, one
/// failure marks a server down; `balance first` sends everything to the first one up (so the
/// deployment is admitted, and run, by `a`); a request that finds its server gone is sent to the
/// other one.
fn api_proxy(instances: &[(&str, &Served)]) -> HaproxyInstance {
    let servers: String = instances
        .iter()
        .map(|(name, served)| {
            let address = served.url.trim_start_matches("http://");
            format!("    server {name} {address} check inter 200 fall 1 rise 2\n")
        })
        .collect();
    HaproxyInstance::start(
        "be_api",
        &format!(
            "backend be_api\n    balance first\n    option httpchk GET /readyz\n    retries 3\n    option redispatch 1\n{servers}"
        ),
    )
}

/// `show stat` of `haproxy`'s runtime API: the status column of server `server` of `be_api`.
fn api_server_status(haproxy: &HaproxyInstance, server: &str) -> String {
    let vesemir_core::ports::LbEndpoint::Tcp { address, port } = haproxy.tcp_endpoint() else {
        panic!("a TCP runtime API expected")
    };
    let mut stream = TcpStream::connect((address.as_str(), port)).expect("the API HAProxy's runtime API");
    stream.write_all(b"show stat\n").expect("show stat");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("show stat reply");
    reply
        .lines()
        .find(|l| l.starts_with(&format!("be_api,{server},")))
        .and_then(|l| l.split(',').nth(17))
        .unwrap_or("absent")
        .to_owned()
}

fn client(lab: &Lab, url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
    command
        .current_dir(lab.dir())
        .env("VESEMIR_SERVER", url)
        .env("VESEMIR_TOKEN", TOKEN)
        .env_remove("VESEMIR_CONFIG");
    command
}

fn run(lab: &Lab, url: &str, args: &[&str]) -> Output {
    client(lab, url).args(args).output().expect("runs vesemir")
}

/// Deployment 1 as the server at `url` shows it (null when the request failed).
fn status(lab: &Lab, url: &str) -> serde_json::Value {
    let output = run(lab, url, &["status", "1", "-o", "json"]);
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    reply["deployment"].clone()
}

/// Deployment 1's events so far, as the server at `url` shows them.
fn events(lab: &Lab, url: &str) -> Vec<serde_json::Value> {
    let output = run(lab, url, &["logs", "1", "-o", "json"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|line| line["event"].clone())
        .collect()
}

/// Submits the lab's deployment through `url` (following it, in the background).
fn submit(lab: &Lab, url: &str) -> std::process::Child {
    let deploy_file = lab.deploy_path().display().to_string();
    client(lab, url)
        .args(["deploy", "-f", &deploy_file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("deploy")
}

/// Waits until a host of deployment 1 is in its steps (mid-batch).
fn wait_in_steps(lab: &Lab, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = status(lab, url);
        let in_steps = d["hosts"].as_array().is_some_and(|hosts| {
            hosts.iter().any(|h| h["phase"].as_str().is_some_and(|p| p.starts_with("step")))
        });
        if in_steps {
            return;
        }
        assert!(Instant::now() < deadline, "no host reached its steps: {d}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the handover in deployment 1's events: how long after `since` it was seen.
fn wait_handover(lab: &Lab, url: &str, since: Instant) -> Duration {
    loop {
        if events(lab, url).iter().any(|e| e["type"] == "handover") {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < LEASE * 5,
            "no handover {:?} after the loss: {}",
            since.elapsed(),
            status(lab, url)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until deployment 1 ended.
fn wait_end(lab: &Lab, url: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = status(lab, url);
        if d["status"] != "running" && d["status"] != "queued" && !d["status"].is_null() {
            return d;
        }
        assert!(Instant::now() < deadline, "never ended: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The end state every run must reach: succeeded, every host on 2.0.0 and up at full weight on
/// every lab HAProxy, one handover from `a` to `b` in the record.
fn assert_finished_by_b(lab: &Lab, d: &serde_json::Value, events: &[serde_json::Value]) {
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
    let handovers: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "handover").collect();
    assert_eq!(handovers.len(), 1, "{events:?}");
    assert!(handovers[0]["from"].as_str().is_some_and(|f| f.starts_with("a/")), "{}", handovers[0]);
    assert!(handovers[0]["to"].as_str().is_some_and(|t| t.starts_with("b/")), "{}", handovers[0]);
    assert_eq!(d["totals"]["succeeded"], 6, "{d}");
}

#[test]
fn killing_the_instance_running_a_deployment_lets_the_other_finish_it_under_load() {
    let cluster = Postgres::start();
    let database = cluster.database();
    let lab =
        Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts");
    let mut a = serve(&lab, &database, "a");
    let b = serve(&lab, &database, "b");
    let api = api_proxy(&[("a", &a), ("b", &b)]);
    let url = format!("http://{}", api.frontend());
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(180),
        ..LoadOptions::default()
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut follower = submit(&lab, &url);

    // Killed while a host of the first batch is in its steps (mid-batch).
    wait_in_steps(&lab, &url);
    a.kill();
    let killed = Instant::now();
    let _ = follower.kill();
    let _ = follower.wait();

    // B takes it over within the lease (and its sweep), and finishes it; the client reads
    // through the API HAProxy all along, which marked A down.
    let taken = wait_handover(&lab, &url, killed);
    assert_eq!(api_server_status(&api, "a"), "DOWN", "the API HAProxy marked the dead instance down");
    assert_eq!(api_server_status(&api, "b"), "UP");
    let d = wait_end(&lab, &url);
    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    eprintln!("taken over {taken:?} after kill -9 (lease {LEASE:?}); load: {report}");
    assert_finished_by_b(&lab, &d, &events(&lab, &url));
    assert_eq!(report.failed, 0, "{report}");
}

/// A TCP proxy to `target` on a free loopback port; `cut` closes every connection and stops
/// accepting (a network split between an instance and the database).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds the proxy");
        let port = listener.local_addr().expect("its address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (flag, held) = (cut.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                // Cut: the listener goes with this thread; later connections are refused.
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                {
                    let mut held = held.lock().expect("proxy streams");
                    held.extend([client.try_clone(), server.try_clone()].into_iter().flatten());
                }
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        Self { port, cut, streams }
    }

    /// Stops accepting and closes every connection.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().expect("proxy streams").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wakes the acceptor so that it sees the cut and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Clears its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// One run of the step on a host, from the probe: instance, start, when its 2 s wait was over
/// and the lab's step began changing the host, end (none if it never got there: aborted).
#[derive(Debug)]
struct StepRun {
    instance: String,
    start: u128,
    change: Option<u128>,
    end: Option<u128>,
}

impl StepRun {
    /// Its last sign of life on the host.
    fn last(&self) -> u128 {
        self.end.or(self.change).unwrap_or(self.start)
    }
}

/// The runs of the step on `host`, as its probe file recorded them.
fn step_runs(lab: &Lab, host: &str) -> Vec<StepRun> {
    let text = std::fs::read_to_string(lab.dir().join(format!("drivers-{host}.log"))).unwrap_or_default();
    let mut runs: Vec<StepRun> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [instance, what, at] = fields[..] else { panic!("{host}: probe line {line:?}") };
        let at: u128 = at.parse().unwrap_or_else(|_| panic!("{host}: probe line {line:?}"));
        match what {
            "start" => {
                runs.push(StepRun { instance: instance.to_owned(), start: at, change: None, end: None })
            }
            "change" | "end" => {
                let run = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.instance == instance && r.end.is_none())
                    .unwrap_or_else(|| panic!("{host}: {what} with no start: {text}"));
                if what == "change" {
                    run.change = Some(at);
                } else {
                    run.end = Some(at);
                }
            }
            _ => panic!("{host}: probe line {line:?}"),
        }
    }
    runs
}

#[test]
fn cutting_the_running_instance_from_the_database_never_lets_two_instances_drive_one_host() {
    let cluster = Postgres::start();
    let database = cluster.database();
    let proxy = Proxy::start(cluster.port);
    let database_a = database.replace(&format!(":{}/", cluster.port), &format!(":{}/", proxy.port));
    assert_ne!(database_a, database, "A's database URL goes through the proxy");
    let lab =
        Lab::start(LabOptions { hosts: 6, concurrency: 2, ..LabOptions::default() }).expect("the lab starts");
    let a = serve(&lab, &database_a, "a");
    let b = serve(&lab, &database, "b");
    let api = api_proxy(&[("a", &a), ("b", &b)]);
    let url = format!("http://{}", api.frontend());
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(180),
        ..LoadOptions::default()
    });
    // The lab's HAProxy side, polled all along: the most servers ever out of rotation at once.
    let polling = AtomicBool::new(true);
    let most_out = Mutex::new(Vec::<String>::new());
    std::thread::sleep(Duration::from_millis(500));
    let mut follower = submit(&lab, &url);

    std::thread::scope(|scope| {
        // The poller stops when this closure ends, passed or failed.
        let _stop = StopOnDrop(&polling);
        scope.spawn(|| {
            while polling.load(Ordering::SeqCst) {
                let out = lab.out_of_rotation().unwrap_or_default();
                let mut most = most_out.lock().expect("poll record");
                if out.len() > most.len() {
                    *most = out;
                }
                drop(most);
                std::thread::sleep(Duration::from_millis(50));
            }
        });

        // A is cut from the database while a host of the first batch is in its steps.
        wait_in_steps(&lab, &url);
        proxy.cut();
        let cut = Instant::now();
        let _ = follower.kill();
        let _ = follower.wait();

        // Read from B here: a read the API HAProxy sent to A in the moment before its check
        // failed waits for A's database pool.
        let taken = wait_handover(&lab, &b.url, cut);
        assert_eq!(api_server_status(&api, "a"), "DOWN", "A's /readyz fails without its database");
        let d = wait_end(&lab, &url);
        // Room for a step A might still have going to show in the probe.
        std::thread::sleep(Duration::from_secs(3));
        polling.store(false, Ordering::SeqCst);
        let report = traffic.finish().expect("the load generator reports");
        eprintln!("taken over {taken:?} after the cut (lease {LEASE:?}); load: {report}");
        assert_finished_by_b(&lab, &d, &events(&lab, &url));
        assert_eq!(report.failed, 0, "{report}");

        // Host side: on each host, every sign of life of A's runs (start, change, end) comes
        // before B's first run there, and no run of one instance overlaps a run of the other.
        let (mut b_runs, mut a_runs) = (0, Vec::new());
        for host in lab.hosts() {
            let runs = step_runs(&lab, &host.name);
            a_runs.extend(
                runs.iter()
                    .filter(|r| r.instance == "a")
                    .map(|r| (host.name.clone(), r.change.is_some(), r.end.is_some())),
            );
            b_runs += runs.iter().filter(|r| r.instance == "b").count();
            for run in runs.iter().filter(|r| r.instance == "b") {
                assert!(run.end.is_some(), "{}: B's step never ended: {runs:?}", host.name);
            }
            let first_b = runs.iter().filter(|r| r.instance == "b").map(|r| r.start).min();
            if let Some(first_b) = first_b {
                for run in runs.iter().filter(|r| r.instance == "a") {
                    assert!(run.last() < first_b, "{}: A still drove it once B had: {runs:?}", host.name);
                }
            }
            for (i, one) in runs.iter().enumerate() {
                for other in &runs[i + 1..] {
                    let (first, second) = if one.start <= other.start { (one, other) } else { (other, one) };
                    assert!(
                        first.instance == second.instance || second.start > first.last(),
                        "{}: {} and {} drove it at once: {runs:?}",
                        host.name,
                        first.instance,
                        second.instance
                    );
                }
            }
        }
        assert!(b_runs >= 4, "B ran the hosts A had not started");
        // Lab HAProxy side: never more servers out of rotation than one instance's batch.
        let most = most_out.lock().expect("poll record").clone();
        eprintln!(
            "most servers out of rotation at once: {most:?}; steps run by B: {b_runs}; by A (host, changed, ended): {a_runs:?}"
        );
        assert!(most.len() <= 2, "more servers out than one batch of 2: {most:?}");
    });
}
