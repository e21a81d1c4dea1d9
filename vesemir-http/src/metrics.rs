//! Prometheus metrics, kept per server (no global recorder, so several servers can live in one
//! process): deployments by outcome, durations, hosts deployed, in flight, queued (also per
//! team) and paused, event streams open, events pruned,
//! takeovers, each counting what **this instance** did or runs, and, read from the database
//! when scraped, the deployments of every instance sharing it by status
//! (`vesemir_database_deployments`). `vesemir_instance_info` names the instance.

use metrics::{counter, gauge, histogram, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use vesemir_core::event::HostOutcome;

use crate::store::Status;

/// Buckets of deployment durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];

/// Buckets of `vesemir_host_out_of_rotation_seconds`: a host's time out of rotation, from a
/// restart of a fraction of a second to a long changeset.
const OUT_OF_ROTATION_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A new, empty set.
    pub fn new() -> Self {
        // Setting buckets only fails for an empty list; this one is not empty.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("vesemir_deployment_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("vesemir_host_out_of_rotation_seconds".into()),
                    OUT_OF_ROTATION_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Self { recorder, handle };
        metrics.with(|| {
            metrics::describe_counter!(
                "vesemir_deployments_total",
                "Deployments ended by this instance, by outcome."
            );
            metrics::describe_histogram!(
                "vesemir_deployment_duration_seconds",
                metrics::Unit::Seconds,
                "Time from start to end of deployments this instance ended."
            );
            metrics::describe_counter!(
                "vesemir_hosts_total",
                "Hosts of deployments this instance ended, by outcome."
            );
            metrics::describe_histogram!(
                "vesemir_host_out_of_rotation_seconds",
                metrics::Unit::Seconds,
                "Each deployed host's time out of rotation (take-out to back in, or to its end if it stayed out)."
            );
            metrics::describe_gauge!("vesemir_deployments_in_flight", "Deployments this instance runs now.");
            metrics::describe_gauge!(
                "vesemir_deployments_queued",
                "Deployments waiting for a slot on this instance."
            );
            metrics::describe_gauge!(
                "vesemir_database_deployments",
                "Deployments in the database by status, of every instance sharing it (read when scraped)."
            );
            metrics::describe_counter!(
                "vesemir_takeovers_total",
                "Deployments this instance took over from instances that stopped renewing their leases."
            );
            metrics::describe_gauge!("vesemir_instance_info", "This server instance, as its leases name it.");
            metrics::describe_counter!(
                "vesemir_interrupted_hosts_out_of_rotation_total",
                "Hosts possibly left out of rotation by deployments interrupted by a server stop."
            );
            metrics::describe_gauge!(
                "vesemir_deployments_paused",
                "Deployments this instance runs that an operator paused (no new host starts until resumed)."
            );
            metrics::describe_gauge!(
                "vesemir_team_deployments_queued",
                "Deployments each team has waiting in the queue now (limits.max_queued_per_team)."
            );
            metrics::describe_gauge!(
                "vesemir_event_streams_open",
                "Event streams (GET .../events) open now (limits.max_event_streams_per_token per token)."
            );
            metrics::describe_counter!(
                "vesemir_events_pruned_total",
                "Events deleted by the retention task (limits.event_retention)."
            );
            metrics::describe_counter!(
                "vesemir_source_polls_total",
                "Polls of units' package sources by this instance, by unit and outcome (read, not_modified, error)."
            );
            metrics::describe_gauge!(
                "vesemir_source_up",
                "Whether the last poll of a unit's package source could read it (1) or not (0)."
            );
            counter!("vesemir_events_pruned_total").increment(0);
            gauge!("vesemir_event_streams_open").set(0.0);
            gauge!("vesemir_deployments_in_flight").set(0.0);
            gauge!("vesemir_deployments_paused").set(0.0);
            gauge!("vesemir_deployments_queued").set(0.0);
        });
        metrics
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder as &dyn Recorder, f)
    }

    /// A deployment ended with status `outcome`.
    pub fn deployment_ended(
        &self,
        labels: &[(&'static str, String)],
        outcome: Status,
        duration: Option<f64>,
    ) {
        let mut all: Vec<(&'static str, String)> = labels.to_vec();
        all.push(("outcome", outcome.as_str().to_owned()));
        self.with(|| {
            counter!("vesemir_deployments_total", &all).increment(1);
            if let Some(seconds) = duration {
                histogram!("vesemir_deployment_duration_seconds", &all).record(seconds);
            }
        });
    }

    /// `count` hosts of a deployment ended with `outcome`.
    pub fn hosts(&self, labels: &[(&'static str, String)], outcome: HostOutcome, count: u64) {
        let mut all: Vec<(&'static str, String)> = labels.to_vec();
        all.push(("outcome", outcome.to_string()));
        self.with(|| counter!("vesemir_hosts_total", &all).increment(count));
    }

    /// A host of a deployment was out of rotation for `seconds`.
    pub fn host_out_of_rotation(&self, labels: &[(&'static str, String)], seconds: f64) {
        self.with(|| histogram!("vesemir_host_out_of_rotation_seconds", labels).record(seconds));
    }

    /// Hosts possibly left out of rotation by an interrupted deployment.
    pub fn interrupted_out_of_rotation(&self, labels: &[(&'static str, String)], count: u64) {
        self.with(|| counter!("vesemir_interrupted_hosts_out_of_rotation_total", labels).increment(count));
    }

    /// Deployments running now changed by `delta`.
    pub fn in_flight(&self, delta: f64) {
        self.with(|| gauge!("vesemir_deployments_in_flight").increment(delta));
    }

    /// Deployments queued now changed by `delta`.
    pub fn queued(&self, delta: f64) {
        self.with(|| gauge!("vesemir_deployments_queued").increment(delta));
    }

    /// Deployments paused now.
    pub fn paused(&self, count: usize) {
        // Counts of deployments fit f64 exactly.
        #[allow(clippy::cast_precision_loss)]
        let count = count as f64;
        self.with(|| gauge!("vesemir_deployments_paused").set(count));
    }

    /// Deployments `team` has queued now.
    pub fn team_queued(&self, team: &str, count: usize) {
        // Counts of deployments fit f64 exactly.
        #[allow(clippy::cast_precision_loss)]
        let count = count as f64;
        let labels = [("team", team.to_owned())];
        self.with(|| gauge!("vesemir_team_deployments_queued", &labels).set(count));
    }

    /// Event streams open now, all tokens together.
    pub fn streams_open(&self, count: usize) {
        #[allow(clippy::cast_precision_loss)]
        let count = count as f64;
        self.with(|| gauge!("vesemir_event_streams_open").set(count));
    }

    /// The retention task deleted `count` events.
    pub fn events_pruned(&self, count: u64) {
        self.with(|| counter!("vesemir_events_pruned_total").increment(count));
    }

    /// Names this instance (`vesemir_instance_info{instance=...} 1`).
    pub fn instance(&self, instance: &str) {
        let labels = [("instance", instance.to_owned())];
        self.with(|| gauge!("vesemir_instance_info", &labels).set(1.0));
    }

    /// This instance took a deployment over.
    pub fn taken_over(&self) {
        self.with(|| counter!("vesemir_takeovers_total").increment(1));
    }

    /// The database's deployments by status, as read now (every status, 0 for those absent).
    pub fn database_counts(&self, counts: &[(Status, i64)]) {
        self.with(|| {
            for status in Status::ALL {
                let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
                // Counts of deployments fit f64 exactly.
                #[allow(clippy::cast_precision_loss)]
                let n = n as f64;
                gauge!("vesemir_database_deployments", "status" => status.as_str()).set(n);
            }
        });
    }

    /// One poll of unit `unit`'s package source ended with `outcome` (`read`, `not_modified`,
    /// `error`): counted, and `vesemir_source_up` set to 0 on an error, 1 otherwise.
    pub fn source_polled(&self, unit: &str, outcome: &'static str) {
        self.with(|| {
            counter!("vesemir_source_polls_total", "unit" => unit.to_owned(), "outcome" => outcome)
                .increment(1);
            gauge!("vesemir_source_up", "unit" => unit.to_owned()).set(if outcome == "error" {
                0.0
            } else {
                1.0
            });
        });
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
