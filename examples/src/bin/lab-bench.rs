//! `lab-bench`: Vesemir with every safety gate on against a floor without Vesemir's gates, on a
//! local lab (real sshd per host, two real HAProxy 2.6 boxes with `retries 0`, goiardi), under
//! steady load, at several fleet sizes and concurrencies in one run.
//!
//! - floor: what a careful shell script does, in strict batches of `concurrency` hosts at once:
//!   SSH connect, drain on both boxes, wait drained, the step over SSH (restarts the app),
//!   poll `GET /health` over HTTP every 20 ms until 200, ready + weight 100%, close. No
//!   maintenance, no wait for HAProxy's own check, no budget read, no locks.
//! - vesemir sliding (the default) and vesemir batches (`window = "batches"`): the library's
//!   `prepare` + `run` over the real adapters (Chef search, HAProxy, SSH, the HTTP probe), with
//!   every gate on: the backend budget read before each take-out, drain, wait drained,
//!   maintenance, the step, `health.http` every 20 ms, weight 0 + ready, wait until HAProxy's
//!   own check sees it UP on both boxes, then its weight.
//! - vesemir checks: the default with the operator's `checks_while_out` (drained, not in
//!   maintenance, during the changeset; after the step marked DOWN unless both boxes' checks
//!   already saw it DOWN since it was drained; waits until both boxes' checks see it UP again;
//!   the lab's backend has no persistence).
//! - noahead (only with `--who`): vesemir sliding with `DriverConfig::connect_ahead` off.
//!
//! Each size runs twice by default: with **varied** restart times (each host's app down for a
//! time drawn from a seeded log-normal, median 1.4 s, tail to 3 s: `RestartTimes::Varied`, the
//! same for the floor and every variant) and with the **fixed** 1 s restart.
//!
//! Each line: wall time (best of `--rounds`, default 1), the rollout alone for Vesemir (its
//! prepare's Chef search and server lookups apart), requests failed under 200 requests/s (must be
//! 0), and each host's time out of rotation, p50 and p99.
//!
//! ```sh
//! cargo run --release -p vesemir-examples --bin lab-bench -- [--rounds 1] [--big]
//! ```
//! `--big` adds 200 hosts at concurrency 20; `--only HOSTSxC` runs one size; `--restarts
//! varied|fixed|both` (default both) and `--seed N` (default 15) choose the restart times;
//! `--who floor,sliding,batches,checks,noahead` the variants (default the first four; floor
//! always); `--poll-ms N` the HAProxy adapter's `poll_interval` for Vesemir; `--phases` prints, for each Vesemir run, each phase's time per host (median/max,
//! from the events).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use vesemir_chef::{ChefConfig, ClientKey};
use vesemir_core::event::{Event, EventKind, EventSink, Phase};
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::ports::{
    AdminState, Backend, Executor, HealthProbe, HttpCheck, LoadBalancer, OutputSink, ProbeOutcome,
    RemoteCommand, Weight,
};
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::{Control, DriverConfig, Host, Ports};
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions, RestartTimes};
use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};
use vesemir_probe::HttpProbe;
use vesemir_ssh::{SshAuth, SshConfig, SshExecutor};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(8);
const HEALTH_INTERVAL: Duration = Duration::from_millis(20);
const LOAD_RATE: u32 = 200;
/// The seed of the varied restart times unless `--seed` says otherwise.
const DEFAULT_SEED: u64 = 15;

/// Where Vesemir's time goes: each host's phases (from its `host_phase` events), timed until
/// its next phase or its end.
#[derive(Default)]
struct Phases {
    /// Per host: its phase entries, in order, with when they started.
    seen: std::sync::Mutex<std::collections::HashMap<String, Vec<(String, Duration)>>>,
}

impl EventSink for Phases {
    fn emit(&self, event: &Event) {
        let (host, label) = match &event.kind {
            EventKind::HostPhase { host, phase } => (host, phase_label(phase)),
            EventKind::HostFinished { host, .. } => (host, "end".to_owned()),
            _ => return,
        };
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.entry(host.to_string()).or_default().push((label, event.elapsed));
    }
}

/// A phase's name, its weight or attempt left out (every health attempt counts as `health`).
fn phase_label(phase: &Phase) -> String {
    match phase {
        Phase::Step { name, .. } => format!("step {name}"),
        Phase::HealthCheck { .. } => "health".to_owned(),
        Phase::Enabling { weight } if *weight == Weight::ZERO => "weight 0 + ready".to_owned(),
        Phase::Enabling { .. } => "weight 100%".to_owned(),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("phase").and_then(|p| p.as_str().map(str::to_owned)))
            .unwrap_or_else(|| "other".to_owned()),
    }
}

impl Phases {
    /// Each phase with its per-host total: median and max, in the order phases first appear.
    fn summary(&self) -> Vec<(String, Duration, Duration)> {
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut order: Vec<String> = Vec::new();
        let mut totals: std::collections::HashMap<String, Vec<Duration>> = std::collections::HashMap::new();
        for entries in seen.values() {
            let mut per_host: std::collections::HashMap<&str, Duration> = std::collections::HashMap::new();
            for pair in entries.windows(2) {
                let ((label, from), (_, to)) = (&pair[0], &pair[1]);
                *per_host.entry(label).or_default() += to.saturating_sub(*from);
                if !order.contains(label) {
                    order.push(label.clone());
                }
            }
            for (label, total) in per_host {
                totals.entry(label.to_owned()).or_default().push(total);
            }
        }
        order
            .into_iter()
            .map(|label| {
                let mut times = totals.remove(&label).unwrap_or_default();
                times.sort();
                let median = times.get(times.len() / 2).copied().unwrap_or_default();
                let max = times.last().copied().unwrap_or_default();
                (label, median, max)
            })
            .collect()
    }
}

fn executor(lab: &Lab) -> SshExecutor {
    let mut config =
        SshConfig::new(lab.ssh_user(), SshAuth::KeyFile { path: lab.ssh_key(), passphrase: None });
    config.port = lab.ssh_port();
    config.known_hosts = lab.known_hosts();
    SshExecutor::new(config)
}

fn command(script: String, timeout: Duration) -> RemoteCommand {
    RemoteCommand { script, env: Vec::new(), timeout, output_limit: 1 << 20 }
}

/// What one run measured.
struct Measure {
    wall: Duration,
    /// For Vesemir: the rollout alone (`run`), without `prepare`.
    rollout: Option<Duration>,
    failed_requests: u64,
    served_requests: u64,
    out_p50: Duration,
    out_p99: Duration,
}

fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    if times.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    times.sort();
    let rank = |p: usize| times[(times.len() * p).div_ceil(100).clamp(1, times.len()) - 1];
    (rank(50), rank(99))
}

/// One host of the floor; answers its time out of rotation (drain to ready + 100%). Errors are
/// strings: the floor must not fail.
async fn floor_host(
    lb: Arc<HaproxyLoadBalancer>,
    ssh: Arc<SshExecutor>,
    probe: Arc<HttpProbe>,
    backend: Backend,
    host: Host,
    step: String,
    health_url: String,
) -> Result<Duration, String> {
    let server = ServerName::new(host.name.as_str()).map_err(|e| e.to_string())?;
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}: {e}", host.name);
    let (sink, _receiver) = OutputSink::channel();
    ssh.connect(&host).await.map_err(|e| fail("connect", &e))?;
    lb.set_state(&backend, &server, AdminState::Drain).await.map_err(|e| fail("drain", &e))?;
    let out = Instant::now();
    lb.wait_drained(&backend, &server, DRAIN_TIMEOUT).await.map_err(|e| fail("wait drained", &e))?;
    let status = ssh.run(&host, &command(step, STEP_TIMEOUT), sink).await.map_err(|e| fail("step", &e))?;
    if status.code != Some(0) {
        return Err(fail("step", &format!("{status:?}")));
    }
    let check =
        HttpCheck { url: health_url, status: 200, body_contains: None, timeout: Duration::from_secs(2) };
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        if probe.check(&check).await.map_err(|e| fail("health", &e))? == ProbeOutcome::Passed {
            break;
        }
        if Instant::now() > deadline {
            return Err(fail("health", &"never passed"));
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
    let full = Weight::percent(100).map_err(|e| fail("weight", &e))?;
    lb.set_state(&backend, &server, AdminState::Ready).await.map_err(|e| fail("ready", &e))?;
    lb.set_weight(&backend, &server, full).await.map_err(|e| fail("weight 100", &e))?;
    let out = out.elapsed();
    ssh.close(&host).await;
    Ok(out)
}

async fn floor(lab: &Lab, concurrency: usize, version: &str) -> Result<(Duration, Vec<Duration>), String> {
    let lb = Arc::new(HaproxyLoadBalancer::new(HaproxyConfig::default()));
    let ssh = Arc::new(executor(lab));
    let probe = Arc::new(HttpProbe::new().map_err(|e| e.to_string())?);
    let backend = lab.backend().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut outs = Vec::new();
    for batch in lab.hosts().chunks(concurrency) {
        let mut tasks = JoinSet::new();
        for h in batch {
            let name = HostName::new(&h.name).map_err(|e| e.to_string())?;
            let host = Host::new(name, h.address.to_string()).map_err(|e| e.0)?;
            tasks.spawn(floor_host(
                Arc::clone(&lb),
                Arc::clone(&ssh),
                Arc::clone(&probe),
                backend.clone(),
                host,
                lab.step_command(&h.name, version),
                format!("http://{}/health", h.app),
            ));
        }
        while let Some(done) = tasks.join_next().await {
            outs.push(done.map_err(|e| e.to_string())??);
        }
    }
    Ok((started.elapsed(), outs))
}

fn request(lab: &Lab, concurrency: usize, window: &str, version: &str) -> Result<DeploymentRequest, String> {
    let root = lab.dir().display();
    let port = lab.hosts().first().map_or(0, |h| h.app.port());
    let text = format!(
        "application = \"shop\"\nenvironment = \"lab\"\nteam = \"lab\"\nversion = \"{version}\"\nrequested_by = \"bench\"\n\n\
         [targets]\ntags = [\"lab-web\"]\n\n\
         [load_balancer]\nbackend = \"be_lab\"\ndiscover = {{ tags = [\"lab-haproxy\"], port = {api} }}\ndrain_timeout = \"10s\"\n\n\
         [strategy]\nconcurrency = {concurrency}\nmax_failures = 0\nwindow = \"{window}\"\n\n\
         [changeset]\nsteps = [{{ name = \"install\", run = \"bash {root}/step.sh {root}/hosts/{{host}} {{version}}\", timeout = \"30s\" }}]\n\
         [changeset.health]\nload_balancer_up = true\nhttp = {{ url = \"http://{{address}}:{port}/health\", interval = \"20ms\", timeout = \"8s\" }}\n",
        api = lab.api_port(),
    );
    DeploymentRequest::from_toml(&text, &RequestPolicy::permissive()).map_err(|e| e.to_string())
}

/// The HAProxy adapter's configuration for Vesemir's runs: the default, with `--poll-ms N` as
/// its `poll_interval` (how often `wait_drained` and `wait_up` read the server's row).
fn haproxy_config() -> HaproxyConfig {
    let default = HaproxyConfig::default();
    let poll = arg("--poll-ms", default.poll_interval.as_millis() as usize);
    HaproxyConfig { poll_interval: Duration::from_millis(poll as u64), ..default }
}

/// Vesemir through the library: the whole time, the rollout alone, and the report.
async fn vesemir(
    lab: &Lab,
    concurrency: usize,
    who: &str,
    version: &str,
) -> Result<(Duration, Duration, vesemir_core::report::DeploymentReport), String> {
    let key = ClientKey::from_file(lab.chef_key_path()).map_err(|e| e.to_string())?;
    let mut chef = ChefConfig::new(lab.chef_url(), "admin", key);
    chef.flavor = vesemir_chef::ServerFlavor::Goiardi;
    let ports = Ports {
        inventory: Arc::new(vesemir_chef::ChefInventory::new(chef).map_err(|e| e.to_string())?),
        load_balancer: Arc::new(HaproxyLoadBalancer::new(haproxy_config())),
        executor: Arc::new(executor(lab)),
    };
    let probe: Arc<dyn HealthProbe> = Arc::new(HttpProbe::new().map_err(|e| e.to_string())?);
    let (window, checks_while_out, connect_ahead) = match who {
        "checks" => ("sliding", true, true),
        "noahead" => ("sliding", false, false),
        window => (window, false, true),
    };
    let config = DriverConfig {
        health_probe: Some(probe),
        checks_while_out,
        connect_ahead,
        ..DriverConfig::default()
    };
    let started = Instant::now();
    let request = request(lab, concurrency, window, version)?;
    let prepared =
        vesemir_core::prepare(Arc::new(request), &ports, &config).await.map_err(|e| e.to_string())?;
    let run_started = Instant::now();
    let phases = Phases::default();
    let report = vesemir_core::run(&prepared, &ports, &phases, &Control::new(), &config).await;
    if std::env::args().any(|a| a == "--phases") {
        let line: Vec<String> = phases
            .summary()
            .into_iter()
            .map(|(label, median, max)| {
                format!("{label} {:.0}/{:.0}", median.as_secs_f64() * 1e3, max.as_secs_f64() * 1e3)
            })
            .collect();
        eprintln!("phases ({who}, per host, median/max ms): {}", line.join(", "));
    }
    if !report.succeeded() {
        return Err(format!("the {who} deploy failed: {}", vesemir_core::render::summary(&report)));
    }
    Ok((started.elapsed(), run_started.elapsed(), report))
}

/// Runs `what` under load and measures it.
fn measured(lab: &Lab, what: &str, concurrency: usize, version: &str) -> Result<Measure, String> {
    // The run before may have left a server READY but not yet seen UP by a box's check (the
    // floor does not wait for it): start from a backend every box sees in rotation.
    lab.wait_all_up(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let load = lab.start_load(LoadOptions { rate: LOAD_RATE, ..LoadOptions::default() });
    let result = match what {
        "floor" => lab.block_on(floor(lab, concurrency, version)).map(|(wall, outs)| (wall, None, outs)),
        who => lab.block_on(vesemir(lab, concurrency, who, version)).map(|(wall, rollout, report)| {
            let outs = report.hosts.iter().filter_map(|h| h.out_of_rotation).collect();
            (wall, Some(rollout), outs)
        }),
    };
    let traffic = load.finish().map_err(|e| e.to_string())?;
    let (wall, rollout, outs) = result?;
    let (out_p50, out_p99) = percentiles(outs);
    if traffic.failed > 0 {
        eprintln!("lab-bench: {what}: {traffic}");
    }
    Ok(Measure {
        wall,
        rollout,
        failed_requests: traffic.failed,
        served_requests: traffic.served,
        out_p50,
        out_p99,
    })
}

fn args() -> Vec<String> {
    std::env::args().collect()
}

fn arg(name: &str, default: usize) -> usize {
    let args = args();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value after `name`, if given.
fn text_arg(name: &str) -> Option<String> {
    let args = args();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn label(who: &str) -> &'static str {
    match who {
        "floor" => "floor (no gates)",
        "sliding" => "vesemir sliding",
        "checks" => "vesemir checks",
        "noahead" => "sliding, no ahead",
        _ => "vesemir batches",
    }
}

fn main() -> ExitCode {
    let rounds = arg("--rounds", 1).max(1);
    let seed = arg("--seed", DEFAULT_SEED as usize) as u64;
    let all = args();
    let mut sizes: Vec<(usize, usize)> = vec![(10, 1), (10, 5), (40, 10)];
    if all.iter().any(|a| a == "--big") {
        sizes.push((200, 20));
    }
    if let Some(only) = text_arg("--only") {
        let parsed = only.split_once('x').and_then(|(h, c)| Some((h.parse().ok()?, c.parse().ok()?)));
        match parsed {
            Some(size) => sizes = vec![size],
            None => {
                eprintln!("lab-bench: --only takes HOSTSxCONCURRENCY, like 40x10");
                return ExitCode::FAILURE;
            }
        }
    }
    let restarts: Vec<RestartTimes> = match text_arg("--restarts").as_deref().unwrap_or("both") {
        "both" => vec![RestartTimes::Varied { seed }, RestartTimes::default()],
        "varied" => vec![RestartTimes::Varied { seed }],
        "fixed" => vec![RestartTimes::default()],
        other => {
            eprintln!("lab-bench: --restarts takes varied, fixed or both, not {other:?}");
            return ExitCode::FAILURE;
        }
    };
    let who_text = text_arg("--who").unwrap_or_else(|| "floor,sliding,batches,checks".to_owned());
    let variants: Vec<&str> = who_text.split(',').map(str::trim).collect();
    if let Some(bad) =
        variants.iter().find(|w| !["floor", "sliding", "batches", "checks", "noahead"].contains(w))
    {
        eprintln!("lab-bench: --who takes floor, sliding, batches, checks, noahead; not {bad:?}");
        return ExitCode::FAILURE;
    }
    if !variants.contains(&"floor") {
        eprintln!("lab-bench: --who must include floor (the ratios are to it)");
        return ExitCode::FAILURE;
    }
    println!(
        "lab-bench: {} round(s) each, {LOAD_RATE} requests/s through both HAProxy boxes, health polled every {} ms",
        rounds,
        HEALTH_INTERVAL.as_millis()
    );
    for restart in &restarts {
        println!("restarts {}: {restart}", restart_label(restart));
    }
    println!(
        "{:<8} {:<8} {:<18} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9}",
        "size", "restarts", "who", "wall s", "rollout s", "ratio", "failed", "out p50", "out p99"
    );
    let mut lab: Option<Lab> = None;
    let mut version = 1;
    for (hosts, concurrency) in sizes {
        if lab.as_ref().is_none_or(|l| l.hosts().len() != hosts) {
            drop(lab.take());
            let started = Instant::now();
            match Lab::start(LabOptions { hosts, concurrency, ..LabOptions::default() }) {
                Ok(l) => {
                    eprintln!("lab of {hosts} hosts up in {:.1} s", started.elapsed().as_secs_f64());
                    lab = Some(l);
                }
                Err(e) => {
                    eprintln!("lab-bench: cannot start a lab of {hosts} hosts: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let Some(lab) = lab.as_ref() else { return ExitCode::FAILURE };
        for restart in &restarts {
            if let Err(e) = lab.set_restart_times(*restart) {
                eprintln!("lab-bench: {e}");
                return ExitCode::FAILURE;
            }
            let mut times: Vec<Duration> = (0..hosts).map(|i| restart.time(i)).collect();
            times.sort();
            eprintln!(
                "{hosts}x{concurrency}, restarts {}: downtime per host median {} ms, max {} ms",
                restart_label(restart),
                times.get(hosts / 2).map_or(0, Duration::as_millis),
                times.last().map_or(0, Duration::as_millis),
            );
            let mut best: Vec<(&str, Measure)> = Vec::new();
            for _ in 0..rounds {
                for &who in &variants {
                    version += 1;
                    let m = match measured(lab, who, concurrency, &format!("{version}.0.0")) {
                        Ok(m) => m,
                        Err(e) => {
                            eprintln!("lab-bench: {hosts}x{concurrency} {who}: {e}");
                            return ExitCode::FAILURE;
                        }
                    };
                    match best.iter_mut().find(|(w, _)| *w == who) {
                        Some((_, b)) if b.wall <= m.wall => {
                            b.failed_requests += m.failed_requests;
                            b.served_requests += m.served_requests;
                        }
                        Some((_, b)) => {
                            let (failed, served) = (b.failed_requests, b.served_requests);
                            *b = m;
                            b.failed_requests += failed;
                            b.served_requests += served;
                        }
                        None => best.push((who, m)),
                    }
                }
            }
            let floor = best.iter().find(|(w, _)| *w == "floor").map_or(Duration::ZERO, |(_, m)| m.wall);
            for (who, m) in &best {
                let rollout = m.rollout.map_or_else(|| "-".to_owned(), |r| format!("{:.2}", r.as_secs_f64()));
                println!(
                    "{:<8} {:<8} {:<18} {:>9.2} {:>9} {:>7.3} {:>10} {:>8.2}s {:>8.2}s",
                    format!("{hosts}x{concurrency}"),
                    restart_label(restart),
                    label(who),
                    m.wall.as_secs_f64(),
                    rollout,
                    m.rollout.unwrap_or(m.wall).as_secs_f64() / floor.as_secs_f64().max(1e-9),
                    format!("{}/{}", m.failed_requests, m.failed_requests + m.served_requests),
                    m.out_p50.as_secs_f64(),
                    m.out_p99.as_secs_f64(),
                );
            }
        }
    }
    ExitCode::SUCCESS
}

/// `varied` or `fixed`, for the table.
fn restart_label(restart: &RestartTimes) -> &'static str {
    match restart {
        RestartTimes::Varied { .. } => "varied",
        RestartTimes::Fixed(_) => "fixed",
    }
}
