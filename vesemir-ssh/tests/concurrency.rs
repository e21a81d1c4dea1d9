//! 200 hosts at once: every libssh2 call runs on the blocking pool, so the async workers stay
//! free and a timer task keeps ticking on time meanwhile.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vesemir_core::ports::{Executor, OutputSink, RemoteCommand};

use common::{command, host, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_hosts_at_once_do_not_stall_the_runtime() {
    let lab = Lab::start();
    let mut config = lab.config();
    config.connect_timeout = Duration::from_secs(60);
    let executor = vesemir_ssh::SshExecutor::new(config);
    let n = 200;
    let hosts: Vec<_> = (0..n).map(|i| host(&format!("web-{i:03}"), lab.sshd.address())).collect();

    let done = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn({
        let done = done.clone();
        async move {
            let mut worst = Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                let before = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                worst = worst.max(before.elapsed());
            }
            worst
        }
    });
    let started = Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .cloned()
        .map(|host| {
            let executor = executor.clone();
            tokio::spawn(async move {
                let (sink, _receiver) = OutputSink::channel();
                // Generous: sshd on this same 2-core machine starts 200 shells at once.
                let echo = RemoteCommand { timeout: Duration::from_secs(120), ..command("echo ok") };
                executor.run(&host, &echo, sink).await
            })
        })
        .collect();
    for task in tasks {
        let status = task.await.expect("task").unwrap_or_else(|e| panic!("{}", e.chain()));
        assert!(status.success());
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let worst = ticker.await.expect("ticker");
    assert_eq!(executor.sessions(), n);
    // A 10 ms timer never waited for SSH work: only for CPU shared with sshd on this machine.
    assert!(worst < Duration::from_secs(1), "a 10 ms tick took {worst:?} while 200 hosts ran ({took:?})");
    println!("200 hosts: {took:?}, worst 10 ms tick {worst:?}");
    for host in &hosts {
        executor.close(host).await;
    }
}
