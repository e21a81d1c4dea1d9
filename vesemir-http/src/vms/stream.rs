//! A VM's events as server-sent events, like a deployment's ([`crate::sse`]): the stored ones
//! after `Last-Event-ID`, then live ones from this instance's run, without gaps or duplicates
//! (the live channel is subscribed before the replay; events are stored before they are
//! announced). A VM whose create or destroy runs on another instance (or on none) is followed
//! in the store every [`REMOTE_POLL`](crate::sse::REMOTE_POLL) until its row has ended.
//! Event name `provision`, id its `seq`, data the core's `ProvisionEvent` JSON.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use vesemir_core::provision::{ProvisionEvent, VmName};

use super::run::LiveVmEvents;
use crate::store::Store;

/// Events read from the store at once while replaying.
const REPLAY_PAGE: i64 = 500;

struct Follow {
    store: Arc<dyn Store>,
    id: i64,
    name: VmName,
    last: u64,
    pending: VecDeque<ProvisionEvent>,
    replay: bool,
    live: Option<LiveVmEvents>,
    /// The row has ended: one last replay, then the stream ends.
    ending: bool,
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
    let state =
        Follow { store, id, name, last: after, pending: VecDeque::new(), replay: true, live, ending: false };
    futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(to_sse(&event)), state))
    })
}

impl Follow {
    async fn next(&mut self) -> Option<ProvisionEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.seq <= self.last {
                    continue;
                }
                self.last = event.seq;
                return Some(event);
            }
            if self.replay {
                match self.store.vm_events_after(self.id, self.last, REPLAY_PAGE).await {
                    Ok(events) if !events.is_empty() => self.pending.extend(events),
                    Ok(_) if self.ending => return None,
                    Ok(_) => self.replay = false,
                    Err(e) => {
                        tracing::warn!(vm = %self.name, error = %e, "replaying the VM's events failed: ending the stream");
                        return None;
                    }
                }
                continue;
            }
            let Some(live) = self.live.as_mut() else {
                self.follow_store().await?;
                continue;
            };
            match live.recv().await {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) if event.seq == self.last + 1 => self.pending.push_back((*event).clone()),
                // A gap: every announced event is stored first.
                Ok(_) | Err(RecvError::Lagged(_)) => self.replay = true,
                Err(RecvError::Closed) => {
                    self.live = None;
                    self.replay = true;
                }
            }
        }
    }

    /// Without a live channel: ends once the row has ended (after one last replay), else waits
    /// [`REMOTE_POLL`](crate::sse::REMOTE_POLL) and replays. `None`: the stream ends.
    async fn follow_store(&mut self) -> Option<()> {
        match self.store.vm(&self.name).await {
            // Still this row, still running.
            Ok(Some(row)) if row.id == self.id && row.status.is_running() => {}
            Ok(_) => {
                self.ending = true;
                self.replay = true;
                return Some(());
            }
            Err(e) => {
                tracing::warn!(vm = %self.name, error = %e, "reading the VM failed: ending the stream");
                return None;
            }
        }
        tokio::time::sleep(crate::sse::REMOTE_POLL).await;
        self.replay = true;
        Some(())
    }
}

fn to_sse(event: &ProvisionEvent) -> SseEvent {
    let mut json = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    crate::server_paths::hide_json(&mut json);
    SseEvent::default().id(event.seq.to_string()).event("provision").data(json.to_string())
}
