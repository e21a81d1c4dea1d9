//! Event retention (`limits.event_retention`): a periodic task deletes the events of deployments
//! that ended longer ago than the retention; the deployment's row, hosts, journal and summary
//! stay. The API then says the events were pruned (`GET .../events` answers 410) rather than
//! showing an empty log; `vesemir_events_pruned_total` counts what was deleted.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::store::{DeploymentRecord, Store};

/// How often the task prunes at most; a retention shorter than an hour prunes every tenth of it
/// (at least every second).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The time before which a deployment must have ended for its events to go.
fn cutoff(retention: Duration, now_ms: i64) -> i64 {
    now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
}

/// Whether `record`'s events are (or are due to be) pruned: it ended longer than `retention`
/// ago (zero keeps events forever).
pub fn pruned(record: &DeploymentRecord, retention: Duration, now_ms: i64) -> bool {
    !retention.is_zero()
        && record.status.is_finished()
        && record.finished_ms.is_some_and(|ended| ended < cutoff(retention, now_ms))
}

/// Prunes once: deletes the events of deployments that ended before `retention` ago. Returns
/// how many were deleted.
pub async fn prune_once(
    store: &dyn Store,
    retention: Duration,
    metrics: &Metrics,
) -> Result<u64, crate::StoreError> {
    let deleted = store.prune_events(cutoff(retention, now_ms())).await?;
    if deleted > 0 {
        metrics.events_pruned(deleted);
        info!(deleted, retention = %humantime::format_duration(retention), "pruned the events of deployments past the event retention");
    }
    Ok(deleted)
}

/// Prunes now and then every [`PRUNE_EVERY`] (or a tenth of a short retention) for as long as
/// the store lives; nothing with a zero retention.
pub async fn keep(store: Weak<dyn Store>, retention: Duration, metrics: Arc<Metrics>) {
    if retention.is_zero() {
        return;
    }
    let every = PRUNE_EVERY.min(retention / 10).max(Duration::from_secs(1));
    loop {
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = prune_once(&*store, retention, &metrics).await {
            warn!(error = %e, "pruning old events failed: trying again later");
        }
        drop(store);
        tokio::time::sleep(every).await;
    }
}
