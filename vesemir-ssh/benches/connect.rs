//! Benchmark: connect + run `true` on 50 SSH sessions at concurrency 50, against a real sshd
//! on loopback (same machine), then `true` again on the open sessions.
//!
//! `cargo bench -p vesemir-ssh` prints wall time and per-session latency percentiles.

use std::time::{Duration, Instant};

use vesemir_core::name::HostName;
use vesemir_core::ports::{Executor, OutputSink, RemoteCommand};
use vesemir_core::Host;
use vesemir_ssh::{HostKeyMode, SshAuth, SshConfig, SshExecutor};
use vesemir_testkit::sshd::Sshd;

const SESSIONS: usize = 50;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).expect("known_hosts");
    let mut config =
        SshConfig::new(sshd.user(), SshAuth::KeyFile { path: sshd.ed25519_key(), passphrase: None });
    config.port = sshd.port();
    config.known_hosts = known_hosts;
    config.host_key_mode = HostKeyMode::Strict;
    let executor = SshExecutor::new(config);
    let hosts: Vec<Host> = (0..SESSIONS)
        .map(|i| {
            Host::new(HostName::new(format!("bench-{i:02}")).expect("name"), sshd.address()).expect("address")
        })
        .collect();
    let command = RemoteCommand {
        script: "true".into(),
        env: Vec::new(),
        timeout: Duration::from_secs(60),
        output_limit: 4096,
    };

    let started = Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .cloned()
        .map(|host| {
            let executor = executor.clone();
            let command = command.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                executor.connect(&host).await.unwrap_or_else(|e| panic!("connect: {}", e.chain()));
                let t1 = Instant::now();
                let (sink, _rx) = OutputSink::channel();
                let status =
                    executor.run(&host, &command, sink).await.unwrap_or_else(|e| panic!("{}", e.chain()));
                assert!(status.success());
                (t1 - t0, t1.elapsed())
            })
        })
        .collect();
    let mut connects = Vec::new();
    let mut runs = Vec::new();
    for task in tasks {
        let (connect, run) = task.await.expect("task");
        connects.push(connect);
        runs.push(run);
    }
    let cold = started.elapsed();

    let started = Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .cloned()
        .map(|host| {
            let executor = executor.clone();
            let command = command.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let (sink, _rx) = OutputSink::channel();
                let status =
                    executor.run(&host, &command, sink).await.unwrap_or_else(|e| panic!("{}", e.chain()));
                assert!(status.success());
                t0.elapsed()
            })
        })
        .collect();
    let mut warm_runs = Vec::new();
    for task in tasks {
        warm_runs.push(task.await.expect("task"));
    }
    let warm = started.elapsed();
    for host in &hosts {
        executor.close(host).await;
    }

    println!(
        "vesemir-ssh bench: {SESSIONS} sessions at concurrency {SESSIONS}, sshd on loopback (same machine)"
    );
    println!("  connect + run `true`, all sessions: {:>8.1} ms wall", ms(cold));
    println!("    connect per session   {}", percentiles(&mut connects));
    println!("    run `true` (new sess) {}", percentiles(&mut runs));
    println!("  run `true` again on the open sessions: {:>8.1} ms wall", ms(warm));
    println!("    run `true` (reused)   {}", percentiles(&mut warm_runs));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |p: f64| ms(samples[((samples.len() - 1) as f64 * p).round() as usize]);
    format!("p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms", at(0.5), at(0.95), at(1.0))
}
