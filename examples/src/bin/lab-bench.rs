//! `lab-bench`: Vesemir's overhead over the per-host floor, on a local lab of 40 hosts at
//! concurrency 10, no holds, no ramp.
//!
//! - floor: the same per-host sequence done directly with the adapters, batches of 10 hosts at
//!   once: SSH connect, drain on both HAProxy boxes, wait drained, maintenance, the step over SSH
//!   (restarts the app, ~1 s), the health command until it passes, weight 0 + ready, wait until
//!   both boxes see the host UP, weight 100%, close.
//! - library: `vesemir_core::prepare` + `run` over the real adapters (Chef search, HAProxy, SSH).
//! - CLI: the `vesemir deploy` binary found next to this one (whole process: config, Chef search,
//!   resolve, rollout), if it was built.
//!
//! Each is run `--rounds` times (default 2), alternating; the best of each is compared.
//!
//! ```sh
//! cargo build --release -p vesemir-cli --bin vesemir
//! cargo run --release -p vesemir-examples --bin lab-bench -- --hosts 40 --concurrency 10
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use vesemir_chef::{ChefConfig, ClientKey};
use vesemir_core::event::{Event, EventSink};
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::ports::{AdminState, Backend, Executor, LoadBalancer, OutputSink, RemoteCommand, Weight};
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::{Control, DriverConfig, Host, Ports};
use vesemir_examples::lab::{Lab, LabOptions};
use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};
use vesemir_ssh::{SshAuth, SshConfig, SshExecutor};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(8);
const HEALTH_INTERVAL: Duration = Duration::from_millis(200);
const UP_TIMEOUT: Duration = Duration::from_secs(30);

struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: &Event) {}
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

/// One host, directly with the adapters. Errors are strings: the floor must not fail.
async fn one_host(
    lb: Arc<HaproxyLoadBalancer>,
    ssh: Arc<SshExecutor>,
    backend: Backend,
    host: Host,
    step: String,
    health: String,
) -> Result<(), String> {
    let server = ServerName::new(host.name.as_str()).map_err(|e| e.to_string())?;
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}: {e}", host.name);
    let (sink, _receiver) = OutputSink::channel();
    ssh.connect(&host).await.map_err(|e| fail("connect", &e))?;
    lb.set_state(&backend, &server, AdminState::Drain).await.map_err(|e| fail("drain", &e))?;
    lb.wait_drained(&backend, &server, DRAIN_TIMEOUT).await.map_err(|e| fail("wait drained", &e))?;
    lb.set_state(&backend, &server, AdminState::Maint).await.map_err(|e| fail("maint", &e))?;
    let status =
        ssh.run(&host, &command(step, STEP_TIMEOUT), sink.clone()).await.map_err(|e| fail("step", &e))?;
    if status.code != Some(0) {
        return Err(fail("step", &format!("{status:?}")));
    }
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let status = ssh
            .run(&host, &command(health.clone(), HEALTH_TIMEOUT), sink.clone())
            .await
            .map_err(|e| fail("health", &e))?;
        if status.code == Some(0) {
            break;
        }
        if Instant::now() > deadline {
            return Err(fail("health", &"never passed"));
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
    let zero = Weight::percent(0).map_err(|e| fail("weight", &e))?;
    let full = Weight::percent(100).map_err(|e| fail("weight", &e))?;
    lb.set_weight(&backend, &server, zero).await.map_err(|e| fail("weight 0", &e))?;
    lb.set_state(&backend, &server, AdminState::Ready).await.map_err(|e| fail("ready", &e))?;
    lb.wait_up(&backend, &server, UP_TIMEOUT).await.map_err(|e| fail("wait up", &e))?;
    lb.set_weight(&backend, &server, full).await.map_err(|e| fail("weight 100", &e))?;
    ssh.close(&host).await;
    Ok(())
}

async fn floor(lab: &Lab, concurrency: usize, version: &str) -> Result<Duration, String> {
    let lb = Arc::new(HaproxyLoadBalancer::new(HaproxyConfig::default()));
    let ssh = Arc::new(executor(lab));
    let backend = lab.backend().map_err(|e| e.to_string())?;
    let started = Instant::now();
    for batch in lab.hosts().chunks(concurrency) {
        let mut tasks = JoinSet::new();
        for h in batch {
            let name = HostName::new(&h.name).map_err(|e| e.to_string())?;
            let host = Host::new(name, h.address.to_string()).map_err(|e| e.0)?;
            tasks.spawn(one_host(
                Arc::clone(&lb),
                Arc::clone(&ssh),
                backend.clone(),
                host,
                lab.step_command(&h.name, version),
                lab.health_command(&h.name),
            ));
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| e.to_string())??;
        }
    }
    Ok(started.elapsed())
}

fn request(lab: &Lab, concurrency: usize, version: &str) -> Result<DeploymentRequest, String> {
    let root = lab.dir().display();
    let text = format!(
        "application = \"shop\"\nenvironment = \"lab\"\nteam = \"lab\"\nversion = \"{version}\"\nrequested_by = \"bench\"\n\n\
         [targets]\ntags = [\"lab-web\"]\n\n\
         [load_balancer]\nbackend = \"be_lab\"\ndiscover = {{ tags = [\"lab-haproxy\"], port = {api} }}\ndrain_timeout = \"10s\"\n\n\
         [strategy]\nconcurrency = {concurrency}\nmax_failures = 0\n\n\
         [changeset]\nsteps = [{{ name = \"install\", run = \"bash {root}/step.sh {root}/hosts/{{host}} {{version}}\", timeout = \"30s\" }}]\n\
         [changeset.health]\ncommand = \"bash {root}/health.sh {root}/hosts/{{host}}\"\ntimeout = \"8s\"\ninterval = \"200ms\"\nload_balancer_up = true\n",
        api = lab.api_port(),
    );
    DeploymentRequest::from_toml(&text, &RequestPolicy::permissive()).map_err(|e| e.to_string())
}

/// The library's whole time, and the part spent preparing (Chef search, server lookups).
async fn library(lab: &Lab, concurrency: usize, version: &str) -> Result<(Duration, Duration), String> {
    let key = ClientKey::from_file(lab.chef_key_path()).map_err(|e| e.to_string())?;
    let mut chef = ChefConfig::new(lab.chef_url(), "admin", key);
    chef.flavor = vesemir_chef::ServerFlavor::Goiardi;
    let ports = Ports {
        inventory: Arc::new(vesemir_chef::ChefInventory::new(chef).map_err(|e| e.to_string())?),
        load_balancer: Arc::new(HaproxyLoadBalancer::new(HaproxyConfig::default())),
        executor: Arc::new(executor(lab)),
    };
    let config = DriverConfig::default();
    let started = Instant::now();
    let prepared = vesemir_core::prepare(Arc::new(request(lab, concurrency, version)?), &ports, &config)
        .await
        .map_err(|e| e.to_string())?;
    let prepared_in = started.elapsed();
    let report = vesemir_core::run(&prepared, &ports, &NoEvents, &Control::new(), &config).await;
    if !report.succeeded() {
        return Err(format!("the library deploy failed: {}", vesemir_core::render::summary(&report)));
    }
    Ok((started.elapsed(), prepared_in))
}

fn cli(lab: &Lab, binary: &PathBuf, concurrency: usize, version: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new(binary)
        .arg("--config")
        .arg(lab.config_path())
        .args(["deploy", "-f"])
        .arg(lab.deploy_path())
        .args(["--set", &format!("version={version}"), "--concurrency", &concurrency.to_string()])
        .current_dir(lab.dir())
        .env_remove("VESEMIR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(format!("vesemir deploy failed:\n{}", String::from_utf8_lossy(&output.stdout)));
    }
    Ok(elapsed)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let hosts = arg("--hosts", 40);
    let concurrency = arg("--concurrency", 10);
    let rounds = arg("--rounds", 2);
    let binary = std::env::var_os("VESEMIR_BIN")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok().map(|me| me.with_file_name("vesemir")))
        .filter(|p| p.is_file());
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lab-bench: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let lab = match Lab::start(LabOptions { hosts, concurrency, ..LabOptions::default() }) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("lab-bench: cannot start the lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "lab of {hosts} hosts up in {:.1} s; concurrency {concurrency}, no holds, {rounds} rounds",
        started.elapsed().as_secs_f64()
    );
    let (mut floors, mut libraries, mut rollouts, mut clis) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut version = 1;
    let mut next = || {
        version += 1;
        format!("{version}.0.0")
    };
    for round in 1..=rounds {
        let result = (|| -> Result<(), String> {
            let f = runtime.block_on(floor(&lab, concurrency, &next()))?;
            println!("round {round}: floor   {:>7.2} s", f.as_secs_f64());
            floors.push(f);
            let (l, prepare) = runtime.block_on(library(&lab, concurrency, &next()))?;
            println!(
                "round {round}: library {:>7.2} s (prepare {:.2} s, rollout {:.2} s)",
                l.as_secs_f64(),
                prepare.as_secs_f64(),
                (l - prepare).as_secs_f64()
            );
            libraries.push(l);
            rollouts.push(l - prepare);
            if let Some(binary) = &binary {
                let c = cli(&lab, binary, concurrency, &next())?;
                println!("round {round}: CLI     {:>7.2} s", c.as_secs_f64());
                clis.push(c);
            }
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("lab-bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let floor = best(&floors);
    println!("\n{hosts} hosts, concurrency {concurrency}, best of {rounds}:");
    println!("  floor (adapters called directly): {:7.2} s", floor.as_secs_f64());
    let library = best(&libraries);
    println!(
        "  vesemir (library: prepare + run):  {:7.2} s   ratio {:.3}",
        library.as_secs_f64(),
        library.as_secs_f64() / floor.as_secs_f64()
    );
    let rollout = best(&rollouts);
    println!(
        "  vesemir rollout alone (run):       {:7.2} s   ratio {:.3}",
        rollout.as_secs_f64(),
        rollout.as_secs_f64() / floor.as_secs_f64()
    );
    match &binary {
        Some(binary) => {
            let cli = best(&clis);
            println!(
                "  vesemir deploy (CLI, whole run):  {:7.2} s   ratio {:.3}   ({})",
                cli.as_secs_f64(),
                cli.as_secs_f64() / floor.as_secs_f64(),
                binary.display()
            );
        }
        None => println!(
            "  vesemir deploy (CLI): not measured: build it with `cargo build --release -p vesemir-cli`"
        ),
    }
    ExitCode::SUCCESS
}
