//! Core overhead of a rollout: 10,000 fake hosts at concurrency 500 with zero-latency fakes.
//!
//! Prints the wall time and time per host of (1) the bare state machine, answering every action
//! at once, and (2) the whole async driver over the core's fakes, plus the process's peak
//! resident memory. Run with `cargo bench -p vesemir-core --bench rollout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vesemir_core::event::NullSink;
use vesemir_core::fake::{FakeExecutor, FakeInventory, FakeLoadBalancer, FakeServer};
use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{
    AdminState, Backend, ExitStatus, FileUpload, InstanceState, LbEndpoint, OutputSink, RemoteCommand,
    ServerLookup, Weight,
};
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::rollout::{Action, ActionResult, Rollout, RolloutConfig};
use vesemir_core::{Control, DriverConfig, Ports};
use vesemir_core::{Host, PortError};

const HOSTS: usize = 10_000;
const CONCURRENCY: usize = 500;

fn request_toml() -> String {
    let hosts: Vec<String> = (0..HOSTS)
        .map(|i| {
            format!("{{ name = \"h{i:05}\", address = \"10.{}.{}.{}\" }}", i >> 16, (i >> 8) & 255, i & 255)
        })
        .collect();
    format!(
        r#"application = "bench"
environment = "bench"
team = "bench"
version = "1"
requested_by = "bench"
[targets]
hosts = [{}]
[load_balancer]
backend = "be"
instances = [{{ address = "127.0.0.1", port = 1 }}, {{ address = "127.0.0.1", port = 2 }}]
server_name = "s-{{host}}"
[strategy]
concurrency = {CONCURRENCY}
[changeset]
steps = [{{ name = "install", run = "install {{version}}" }}, {{ name = "restart", run = "restart" }}]
[changeset.health]
command = "check"
"#,
        hosts.join(", ")
    )
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn per_host(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6 / HOSTS as f64
}

/// Runs the bare machine; also answers how many backend reads it asked for and how long
/// cloning the listing for them took (the bench's own cost, inside the wall time).
fn bare_machine(
    request: &DeploymentRequest,
    plan: Arc<vesemir_core::Plan>,
) -> (Duration, usize, usize, usize, Duration) {
    let backend = serving(&plan);
    let (mut reads, mut cloning) = (0usize, Duration::ZERO);
    let start = Instant::now();
    let mut machine = Rollout::new(plan, RolloutConfig::from_request(request), start);
    let (mut actions, mut events) = (0usize, 0usize);
    let mut queue = Vec::new();
    while !machine.is_finished() {
        while let Some(action) = machine.poll_action() {
            queue.push(action);
        }
        while machine.poll_event().is_some() {
            events += 1;
        }
        for action in queue.drain(..) {
            actions += 1;
            let result = match action {
                Action::RunStep { .. } | Action::RunHealthCheck { .. } => {
                    ActionResult::Exited(ExitStatus::code(0))
                }
                Action::ReadBackend { .. } => {
                    reads += 1;
                    let t = Instant::now();
                    let listing = backend.clone();
                    cloning += t.elapsed();
                    ActionResult::Backend(listing)
                }
                _ => ActionResult::Done,
            };
            machine.handle_result(action.host(), result, start);
        }
        if let Some(at) = machine.poll_timeout() {
            machine.handle_timeout(at);
        }
    }
    (start.elapsed(), actions, events, reads, cloning)
}

/// Every server of `plan` in rotation at full weight on both instances: what a healthy backend
/// lists when the rollout reads it before a take-out.
fn serving(plan: &vesemir_core::Plan) -> Vec<vesemir_core::ports::ServerState> {
    let instances = [
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 1 },
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 2 },
    ];
    vesemir_core::ports::ServerState::gather(plan.hosts.iter().flat_map(|h| {
        instances.iter().map(move |instance| {
            let state = InstanceState {
                instance: instance.clone(),
                status: vesemir_core::ports::ServerStatus::Up,
                weight: 100,
                configured_weight: 100,
                sessions: 0,
                admin: AdminState::Ready,
                operational: vesemir_core::ports::Operational::Up,
                check: None,
                address: Some(h.host.address.clone()),
            };
            (h.server.clone(), state)
        })
    }))
}

/// Ports that answer every call at once, with no state but the backend's listing: what is left
/// is the core's own cost.
#[derive(Debug)]
struct Instant0 {
    backend: Vec<vesemir_core::ports::ServerState>,
}

#[async_trait::async_trait]
impl vesemir_core::ports::LoadBalancer for Instant0 {
    async fn resolve(&self, _: &Backend, lookup: &ServerLookup) -> Result<ServerName, PortError> {
        match lookup {
            ServerLookup::Name(name) => Ok(name.clone()),
            ServerLookup::Address(_) => Err(PortError::not_found("by address")),
        }
    }
    async fn set_state(&self, _: &Backend, _: &ServerName, _: AdminState) -> Result<(), PortError> {
        Ok(())
    }
    async fn set_weight(&self, _: &Backend, _: &ServerName, _: Weight) -> Result<(), PortError> {
        Ok(())
    }
    async fn shutdown_sessions(&self, _: &Backend, _: &ServerName) -> Result<(), PortError> {
        Ok(())
    }
    async fn status(&self, _: &Backend, _: &ServerName) -> Result<Vec<InstanceState>, PortError> {
        Ok(Vec::new())
    }
    async fn servers(&self, _: &Backend) -> Result<Vec<vesemir_core::ports::ServerState>, PortError> {
        Ok(self.backend.clone())
    }
    async fn restore(&self, _: &Backend, _: &ServerName, _: &[InstanceState]) -> Result<(), PortError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl vesemir_core::ports::Executor for Instant0 {
    async fn connect(&self, _: &Host) -> Result<(), PortError> {
        Ok(())
    }
    async fn run(&self, _: &Host, _: &RemoteCommand, _: OutputSink) -> Result<ExitStatus, PortError> {
        Ok(ExitStatus::code(0))
    }
    async fn upload(&self, _: &Host, _: &FileUpload) -> Result<(), PortError> {
        Ok(())
    }
    async fn close(&self, _: &Host) {}
}

fn main() {
    let request =
        DeploymentRequest::from_toml(&request_toml(), &RequestPolicy::permissive()).expect("valid request");
    let request = Arc::new(request);
    let instances = vec![
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 1 },
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 2 },
    ];
    let servers: Vec<FakeServer> = (0..HOSTS)
        .map(|i| FakeServer::new(ServerName::new(format!("s-h{i:05}")).expect("name"), format!("10.0.0.{i}")))
        .collect();
    let lb = FakeLoadBalancer::new(BackendName::new("be").expect("name"), instances, servers);
    let ports = Ports {
        inventory: Arc::new(FakeInventory::new()),
        load_balancer: Arc::new(lb.clone()),
        executor: Arc::new(FakeExecutor::new()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let config = DriverConfig::default();

    let prepare_start = Instant::now();
    let prepared =
        runtime.block_on(vesemir_core::prepare(request.clone(), &ports, &config)).expect("prepares");
    let prepare_time = prepare_start.elapsed();

    let (machine_time, actions, events, reads, cloning) = bare_machine(&request, prepared.plan.clone());

    let run_start = Instant::now();
    let report = runtime.block_on(vesemir_core::run(&prepared, &ports, &NullSink, &Control::new(), &config));
    let run_time = run_start.elapsed();
    assert_eq!(report.totals.succeeded, HOSTS, "every host deployed");
    assert!(report.max_out_of_rotation <= CONCURRENCY);

    let instant0 = Arc::new(Instant0 { backend: serving(&prepared.plan) });
    let null_ports = Ports {
        inventory: Arc::new(FakeInventory::new()),
        load_balancer: instant0.clone(),
        executor: instant0,
    };
    let null_start = Instant::now();
    let null_report =
        runtime.block_on(vesemir_core::run(&prepared, &null_ports, &NullSink, &Control::new(), &config));
    let null_time = null_start.elapsed();
    assert_eq!(null_report.totals.succeeded, HOSTS);

    println!("rollout bench: {HOSTS} fake hosts, concurrency {CONCURRENCY}, 2 LB instances, 2 steps + health check, zero-latency fakes");
    println!(
        "  state machine alone : {:>8.1} ms  {:>6.2} us/host  ({actions} actions, {events} events)",
        machine_time.as_secs_f64() * 1e3,
        per_host(machine_time)
    );
    println!(
        "    of which the bench cloning the 10,000-server listing for {reads} backend reads: {:.1} ms; the machine itself {:.2} us/host",
        cloning.as_secs_f64() * 1e3,
        per_host(machine_time.saturating_sub(cloning))
    );
    println!(
        "  prepare (resolve)   : {:>8.1} ms  {:>6.2} us/host",
        prepare_time.as_secs_f64() * 1e3,
        per_host(prepare_time)
    );
    println!(
        "  driver, no-op ports : {:>8.1} ms  {:>6.2} us/host  (core overhead: machine + driver + tasks + timeouts)",
        null_time.as_secs_f64() * 1e3,
        per_host(null_time)
    );
    println!(
        "  driver + fakes      : {:>8.1} ms  {:>6.2} us/host  (max {} out of rotation)",
        run_time.as_secs_f64() * 1e3,
        per_host(run_time),
        lb.rotation_log().max_out_of_rotation
    );
    println!("  peak RSS            : {:>8.1} MiB", peak_rss_mib());
}
