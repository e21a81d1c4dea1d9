//! A deployment's events as server-sent events: replay of stored events after `Last-Event-ID`,
//! then live ones until the deployment ends, without gaps or duplicates.
//!
//! The live channel is subscribed before the replay starts, and events are stored before they
//! are broadcast: an event missing from the replay arrives live. Live events already sent by the
//! replay are skipped by sequence number; a gap (a slow follower that lagged) is filled from the
//! database.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use vesemir_core::Event;

use crate::runner::LiveEvents;
use crate::store::Store;

/// Events read from the database at once while replaying.
const REPLAY_PAGE: i64 = 500;

struct Follow {
    store: Arc<dyn Store>,
    id: i64,
    last: u64,
    pending: VecDeque<Event>,
    replay: bool,
    live: Option<LiveEvents>,
}

/// The stream of deployment `id`'s events after `after`; `live` is its live channel, subscribed
/// before this call (`None` once it has ended).
pub fn follow(
    store: Arc<dyn Store>,
    id: i64,
    after: u64,
    live: Option<LiveEvents>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = Follow { store, id, last: after, pending: VecDeque::new(), replay: true, live };
    futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(to_sse(&event)), state))
    })
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.seq <= self.last {
                    continue;
                }
                self.last = event.seq;
                return Some(event);
            }
            if self.replay {
                match self.store.events_after(self.id, self.last, REPLAY_PAGE).await {
                    Ok(events) if !events.is_empty() => self.pending.extend(events),
                    Ok(_) => self.replay = false,
                    Err(e) => {
                        tracing::warn!(deployment = self.id, error = %e, "replaying events failed: ending the stream");
                        return None;
                    }
                }
                continue;
            }
            let live = self.live.as_mut()?;
            match live.recv().await {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) if event.seq == self.last + 1 => self.pending.push_back((*event).clone()),
                // A gap: every broadcast event is stored first, so the database has it.
                Ok(_) | Err(RecvError::Lagged(_)) => self.replay = true,
                Err(RecvError::Closed) => {
                    self.live = None;
                    self.replay = true;
                }
            }
        }
    }
}

fn to_sse(event: &Event) -> SseEvent {
    let json = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    let kind = json.get("type").and_then(serde_json::Value::as_str).unwrap_or("event").to_owned();
    SseEvent::default().id(event.seq.to_string()).event(kind).data(json.to_string())
}
