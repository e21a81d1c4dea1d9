//! A VM's events as server-sent events, like a deployment's ([`crate::sse`]): the stored ones
//! after `Last-Event-ID`, then live ones from this instance's run, without gaps or duplicates
//! (the live channel is subscribed before the replay; events are stored before they are
//! announced). A VM whose create or destroy runs on another instance (or on none) is followed
//! in the store every [`REMOTE_POLL`](crate::sse::REMOTE_POLL) until its row has ended.
//! Event name `provision`, id its `seq`, data the core's `ProvisionEvent` JSON.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use vesemir_core::provision::{ProvisionEvent, VmName};

use super::run::LiveVmEvents;
use crate::sse::{follow_feed, Feed};
use crate::store::{Store, StoreError};

/// VM row `id`'s events (`name` is the row's: a later VM of that name is another row).
struct Vm {
    store: Arc<dyn Store>,
    id: i64,
    name: VmName,
}

#[async_trait::async_trait]
impl Feed for Vm {
    type Item = ProvisionEvent;

    fn seq(item: &ProvisionEvent) -> u64 {
        item.seq
    }

    async fn after(&self, last: u64, limit: i64) -> Result<Vec<ProvisionEvent>, StoreError> {
        self.store.vm_events_after(self.id, last, limit).await
    }

    async fn running(&self) -> Result<bool, StoreError> {
        // Still this row, still creating or destroying.
        Ok(self.store.vm(&self.name).await?.is_some_and(|row| row.id == self.id && row.status.is_running()))
    }

    fn to_sse(event: &ProvisionEvent) -> SseEvent {
        let mut json = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
        crate::server_paths::hide_json(&mut json);
        SseEvent::default().id(event.seq.to_string()).event("provision").data(json.to_string())
    }

    fn describe(&self) -> String {
        format!("VM {}", self.name)
    }
}

/// The stream of VM row `id`'s events after `after`; `live` is its run's channel on this
/// instance, subscribed before this call.
pub fn follow(
    store: Arc<dyn Store>,
    id: i64,
    name: VmName,
    after: u64,
    live: Option<LiveVmEvents>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    follow_feed(Vm { store, id, name }, after, live, None)
}
