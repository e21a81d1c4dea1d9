//! A load generator: steady traffic through the HAProxy frontends, bounded in count and time,
//! counting requests served and failed, and which version served them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::error::{LabError, LabResult};

/// How much traffic to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Requests per second, over all frontends together (sent round robin).
    pub rate: u32,
    /// Stop after this long even if not told to.
    pub max_duration: Duration,
    /// Stop after this many requests even if not told to.
    pub max_requests: u64,
    /// A request without an answer within this is failed.
    pub request_timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            rate: 200,
            max_duration: Duration::from_secs(300),
            max_requests: 200 * 300,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// What the traffic met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests answered 200.
    pub served: u64,
    /// Requests that failed (no connection, an error status, no answer in time).
    pub failed: u64,
    /// Requests served per version (the body of `GET /`).
    pub by_version: BTreeMap<String, u64>,
    /// The first few failures, with the frontend and the reason.
    pub failures: Vec<String>,
    /// How long the traffic ran.
    pub elapsed: Duration,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<String> = self.by_version.iter().map(|(v, n)| format!("{v}: {n}")).collect();
        write!(
            f,
            "requests served: {}, requests failed: {} in {:.1} s (by version: {})",
            self.served,
            self.failed,
            self.elapsed.as_secs_f64(),
            versions.join(", ")
        )?;
        for failure in &self.failures {
            write!(f, "\n  failed: {failure}")?;
        }
        Ok(())
    }
}

/// Traffic running in the background. [`LoadRun::finish`] stops it and answers the counts.
#[derive(Debug)]
pub struct LoadRun {
    stop: Arc<AtomicBool>,
    result: mpsc::Receiver<LoadReport>,
    bound: Duration,
}

impl LoadRun {
    /// Starts traffic to `frontends` on `runtime`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        frontends: Vec<SocketAddr>,
        options: LoadOptions,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, result) = mpsc::channel();
        let bound = options.max_duration + options.request_timeout + Duration::from_secs(5);
        let flag = Arc::clone(&stop);
        runtime.spawn(async move {
            let report = generate(frontends, options, flag).await;
            let _ = sender.send(report);
        });
        Self { stop, result, bound }
    }

    /// Stops sending, waits for the requests in flight, and answers what the traffic met.
    pub fn finish(self) -> LabResult<LoadReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.result.recv_timeout(self.bound).map_err(|e| {
            LabError::new(format!("the load generator did not report within {:?}: {e}", self.bound))
        })
    }
}

async fn generate(frontends: Vec<SocketAddr>, options: LoadOptions, stop: Arc<AtomicBool>) -> LoadReport {
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let started = Instant::now();
    if frontends.is_empty() || options.rate == 0 {
        return LoadReport::default();
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(options.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests = JoinSet::new();
    let mut sent = 0u64;
    while !stop.load(Ordering::SeqCst)
        && sent < options.max_requests
        && started.elapsed() < options.max_duration
    {
        ticker.tick().await;
        let frontend = frontends[(sent % frontends.len() as u64) as usize];
        let report = Arc::clone(&report);
        let timeout = options.request_timeout;
        requests.spawn(async move {
            let outcome = super::app::get(frontend, "/", timeout).await;
            let mut report = report.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match outcome {
                Ok((200, version)) => {
                    report.served += 1;
                    *report.by_version.entry(version.trim().to_owned()).or_default() += 1;
                }
                Ok((status, body)) => {
                    fail(&mut report, format!("{frontend}: status {status}: {}", body.trim()))
                }
                Err(reason) => fail(&mut report, format!("{frontend}: {reason}")),
            }
        });
        sent += 1;
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    let mut report = report.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    report.elapsed = started.elapsed();
    report
}

fn fail(report: &mut LoadReport, reason: String) {
    report.failed += 1;
    if report.failures.len() < 10 {
        report.failures.push(reason);
    }
}
