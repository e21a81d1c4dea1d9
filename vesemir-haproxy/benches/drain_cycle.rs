//! How long one drain + enable cycle takes per server against real haproxy: 100 servers on 2
//! instances, over unix sockets and over TCP. Run with `cargo bench -p vesemir-haproxy`.
//!
//! One cycle is what the rollout does for a host: drain, wait for 0 sessions, maintenance,
//! weight 0, ready, wait for UP, ramp 50%, 100%.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{AdminState, Backend, LoadBalancer, ServerLookup, Weight};
use vesemir_haproxy::HaproxyLoadBalancer;
use vesemir_testkit::haproxy::HaproxyInstance;

const SERVERS: usize = 100;

async fn cycle(lb: &HaproxyLoadBalancer, backend: &Backend, server: &ServerName) {
    let bound = Duration::from_secs(10);
    lb.set_state(backend, server, AdminState::Drain).await.unwrap();
    lb.wait_drained(backend, server, bound).await.unwrap();
    lb.set_state(backend, server, AdminState::Maint).await.unwrap();
    lb.set_weight(backend, server, Weight::ZERO).await.unwrap();
    lb.set_state(backend, server, AdminState::Ready).await.unwrap();
    lb.wait_up(backend, server, bound).await.unwrap();
    lb.set_weight(backend, server, Weight::percent(50).unwrap()).await.unwrap();
    lb.set_weight(backend, server, Weight::FULL).await.unwrap();
}

fn report(label: &str, mut samples: Vec<Duration>, total: Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = total / samples.len() as u32;
    println!(
        "{label:<28} {n} servers x 2 instances: total {total:>8.1?}  per server: mean {mean:>7.2?}  p50 {:>7.2?}  p95 {:>7.2?}  max {:>7.2?}",
        at(0.5),
        at(0.95),
        at(1.0),
        n = samples.len(),
    );
}

async fn run(label: &str, lb: &HaproxyLoadBalancer, backend: &Backend) {
    let mut names = Vec::new();
    for i in 0..SERVERS {
        let address = format!("127.0.1.{}", i + 1);
        names.push(lb.resolve(backend, &ServerLookup::Address(address)).await.unwrap());
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    for name in &names {
        let one = Instant::now();
        cycle(lb, backend, name).await;
        samples.push(one.elapsed());
    }
    report(label, samples, started.elapsed());

    // One status: `show servers state` + `show stat` (the server's row) on both instances at once.
    let started = Instant::now();
    for name in &names {
        lb.status(backend, name).await.unwrap();
    }
    let per_status = started.elapsed() / names.len() as u32;
    println!("{label:<28} status of one server on 2 instances: {per_status:.2?}");
}

fn main() {
    let mut config = String::from("backend be_bench\n    balance roundrobin\n");
    for i in 0..SERVERS {
        config.push_str(&format!("    server srv{i:03} 127.0.1.{}:8080 weight 10\n", i + 1));
    }
    let instances =
        [HaproxyInstance::start("be_bench", &config), HaproxyInstance::start("be_bench", &config)];
    let name = BackendName::new("be_bench").unwrap();
    let unix =
        Backend { name: name.clone(), instances: instances.iter().map(|i| i.unix_endpoint()).collect() };
    let tcp = Backend { name, instances: instances.iter().map(|i| i.tcp_endpoint()).collect() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let lb = HaproxyLoadBalancer::default();
    runtime.block_on(async {
        // Warm up once, then measure each transport.
        run("warm-up (unix)", &lb, &unix).await;
        run("drain+enable cycle, unix", &lb, &unix).await;
        run("drain+enable cycle, tcp", &lb, &tcp).await;
    });
}
