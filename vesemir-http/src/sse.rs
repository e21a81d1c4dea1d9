//! A deployment's events as server-sent events: replay of stored events after `Last-Event-ID`,
//! then live ones until the deployment ends, without gaps or duplicates.
//!
//! The live channel is subscribed before the replay starts, and events are stored before they
//! are broadcast: an event missing from the replay arrives live. Live events already sent by the
//! replay are skipped by sequence number; a gap (a slow follower that lagged) is filled from the
//! database.
//!
//! A deployment another instance runs (no live channel here) is followed in the database: the
//! store's announcements (PostgreSQL's `NOTIFY`) wake the follower to read what was stored,
//! and it also reads every [`REMOTE_POLL`] in case one was missed, until the record has ended.
//! Sequence numbers are the deployment's own, so `Last-Event-ID` resumes on any instance.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use vesemir_core::Event;

use crate::runner::LiveEvents;
use crate::store::{Store, StoreError};

/// Events read from the database at once while replaying.
const REPLAY_PAGE: i64 = 500;

/// How often a follower of a deployment without a live channel here reads the database when no
/// announcement woke it.
pub const REMOTE_POLL: Duration = Duration::from_secs(1);

/// One record's numbered events as a follower reads them: a deployment's here, a VM's in
/// [`crate::vms::stream`]. Numbers start at 1 without gaps; every event is stored before it is
/// announced live.
#[async_trait::async_trait]
pub(crate) trait Feed: Send + Sync + 'static {
    /// The event type.
    type Item: Clone + Send + Sync + 'static;
    /// An event's number.
    fn seq(item: &Self::Item) -> u64;
    /// The stored events numbered above `last`, oldest first, at most `limit`.
    async fn after(&self, last: u64, limit: i64) -> Result<Vec<Self::Item>, StoreError>;
    /// Whether the record's run has not ended (asked when no live channel is here).
    async fn running(&self) -> Result<bool, StoreError>;
    /// The event as sent.
    fn to_sse(item: &Self::Item) -> SseEvent;
    /// The record, for logs: `deployment 12`, `VM alice-1`.
    fn describe(&self) -> String;
}

/// What one stream follows: `feed`'s events above `last`.
struct Follow<F: Feed> {
    feed: F,
    last: u64,
    pending: VecDeque<F::Item>,
    replay: bool,
    live: Option<broadcast::Receiver<Arc<F::Item>>>,
    /// The store's announcements of record `id`, when there is no live channel.
    announced: Option<(broadcast::Receiver<i64>, i64)>,
    /// The record has ended: one last replay, then the stream ends.
    ending: bool,
}

/// The stream of `feed`'s events after `after`: `live` is its run's channel on this instance,
/// subscribed before this call (`None` when it runs elsewhere or has ended); `announced`, the
/// store's announcements and the record's id in them, wakes a follower without one.
pub(crate) fn follow_feed<F: Feed>(
    feed: F,
    after: u64,
    live: Option<broadcast::Receiver<Arc<F::Item>>>,
    announced: Option<(broadcast::Receiver<i64>, i64)>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state =
        Follow { feed, last: after, pending: VecDeque::new(), replay: true, live, announced, ending: false };
    futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(F::to_sse(&event)), state))
    })
}

/// A deployment's events.
struct Deployment {
    store: Arc<dyn Store>,
    id: i64,
}

#[async_trait::async_trait]
impl Feed for Deployment {
    type Item = Event;

    fn seq(item: &Event) -> u64 {
        item.seq
    }

    async fn after(&self, last: u64, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.store.events_after(self.id, last, limit).await
    }

    async fn running(&self) -> Result<bool, StoreError> {
        Ok(self.store.get(self.id).await?.is_some_and(|record| !record.status.is_finished()))
    }

    fn to_sse(item: &Event) -> SseEvent {
        to_sse(item)
    }

    fn describe(&self) -> String {
        format!("deployment {}", self.id)
    }
}

/// The stream of deployment `id`'s events after `after`; `live` is its live channel, subscribed
/// before this call (`None` once it has ended).
pub fn follow(
    store: Arc<dyn Store>,
    id: i64,
    after: u64,
    live: Option<LiveEvents>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let announced = if live.is_none() { store.event_announcements().map(|a| (a, id)) } else { None };
    follow_feed(Deployment { store, id }, after, live, announced)
}

impl<F: Feed> Follow<F> {
    async fn next(&mut self) -> Option<F::Item> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if F::seq(&event) <= self.last {
                    continue;
                }
                self.last = F::seq(&event);
                return Some(event);
            }
            if self.replay {
                match self.feed.after(self.last, REPLAY_PAGE).await {
                    Ok(events) if !events.is_empty() => self.pending.extend(events),
                    Ok(_) if self.ending => return None,
                    Ok(_) => self.replay = false,
                    Err(e) => {
                        tracing::warn!(stream = %self.feed.describe(), error = %e, "replaying events failed: ending the stream");
                        return None;
                    }
                }
                continue;
            }
            let Some(live) = self.live.as_mut() else {
                self.follow_database().await?;
                continue;
            };
            match live.recv().await {
                Ok(event) if F::seq(&event) <= self.last => {}
                Ok(event) if F::seq(&event) == self.last + 1 => self.pending.push_back((*event).clone()),
                // A gap: every broadcast event is stored first, so the database has it.
                Ok(_) | Err(RecvError::Lagged(_)) => self.replay = true,
                Err(RecvError::Closed) => {
                    self.live = None;
                    self.replay = true;
                }
            }
        }
    }

    /// With no live channel here: ends when the record has ended (after one last replay, since
    /// every event is stored before the end), else waits for an announcement of this record's
    /// events or [`REMOTE_POLL`], and replays. `None`: the stream ends.
    async fn follow_database(&mut self) -> Option<()> {
        match self.feed.running().await {
            Ok(true) => {}
            Ok(false) => {
                self.ending = true;
                self.replay = true;
                return Some(());
            }
            Err(e) => {
                tracing::warn!(stream = %self.feed.describe(), error = %e, "reading the record failed: ending the stream");
                return None;
            }
        }
        let poll = tokio::time::sleep(REMOTE_POLL);
        match self.announced.as_mut() {
            Some((announced, id)) => {
                let id = *id;
                tokio::select! {
                    () = poll => {}
                    () = announcement(announced, id) => {}
                }
            }
            None => poll.await,
        }
        self.replay = true;
        Some(())
    }
}

/// Resolves when `id` is announced, or when announcements were missed (lagged); never when the
/// announcer is gone (the poll goes on).
async fn announcement(announced: &mut broadcast::Receiver<i64>, id: i64) {
    loop {
        match announced.recv().await {
            Ok(announced) if announced == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

fn to_sse(event: &Event) -> SseEvent {
    let mut json = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    crate::server_paths::hide_json(&mut json);
    let kind = json.get("type").and_then(serde_json::Value::as_str).unwrap_or("event").to_owned();
    SseEvent::default().id(event.seq.to_string()).event(kind).data(json.to_string())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use vesemir_core::event::{EventKind, WaitReason};

    use super::*;
    use crate::store::{NewDeployment, SqliteStore};

    fn event(seq: u64) -> Event {
        Event {
            seq,
            elapsed: Duration::from_millis(seq),
            kind: EventKind::Waiting { reason: WaitReason::Pause { duration: Duration::from_secs(1) } },
        }
    }

    async fn store_with_events(n: u64) -> (tempfile::TempDir, Arc<dyn Store>, i64) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db")).await.expect("opens");
        let new = NewDeployment {
            application: "shop".into(),
            environment: "production".into(),
            team: "payments".into(),
            version: "1".into(),
            requested_by: "tests".into(),
            playbook: None,
            query: "hosts".into(),
            request: "{}".into(),
            idempotency_key: None,
            body_sha256: String::new(),
            created_ms: 0,
        };
        let id = match store.insert(&new).await.expect("inserts") {
            crate::store::Inserted::New(id) => id,
            other => panic!("no key given, no deployment in the way: {other:?}"),
        };
        let events: Vec<Event> = (1..=n).map(event).collect();
        store.append_events(id, &events, &[]).await.expect("appends");
        // Ended: a follower without a live channel ends once it has read every stored event.
        let finish = crate::store::Finish {
            status: crate::store::Status::Succeeded,
            error: None,
            totals: None,
            hosts: Vec::new(),
            out_of_rotation: Vec::new(),
            finished_ms: 1,
        };
        store.finish(id, &finish).await.expect("finishes");
        (dir, Arc::new(store), id)
    }

    async fn seqs(stream: impl Stream<Item = Result<axum::response::sse::Event, Infallible>>) -> usize {
        tokio::time::timeout(Duration::from_secs(5), stream.count()).await.expect("the stream ends")
    }

    #[tokio::test]
    async fn events_both_replayed_and_live_are_sent_once() {
        let (_dir, store, id) = store_with_events(10).await;
        let (sender, receiver) = broadcast::channel(64);
        // Live has 5..=10 (already stored) and then 11, stored before it is broadcast.
        for seq in 5..=10 {
            sender.send(Arc::new(event(seq))).expect("a receiver");
        }
        store.append_events(id, &[event(11)], &[]).await.expect("appends");
        sender.send(Arc::new(event(11))).expect("a receiver");
        drop(sender);
        let mut follow = Follow {
            feed: Deployment { store, id },
            last: 3,
            pending: VecDeque::new(),
            replay: true,
            live: Some(receiver),
            announced: None,
            ending: false,
        };
        let mut got = Vec::new();
        while let Some(e) = follow.next().await {
            got.push(e.seq);
        }
        assert_eq!(got, (4..=11).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_follower_that_lags_behind_the_live_channel_fills_the_gap_from_the_database() {
        let (_dir, store, id) = store_with_events(0).await;
        let (sender, receiver) = broadcast::channel(2);
        for seq in 1..=20 {
            store.append_events(id, &[event(seq)], &[]).await.expect("appends");
            sender.send(Arc::new(event(seq))).expect("a receiver");
        }
        drop(sender);
        let mut follow = Follow {
            feed: Deployment { store: store.clone(), id },
            last: 0,
            pending: VecDeque::new(),
            replay: false,
            live: Some(receiver),
            announced: None,
            ending: false,
        };
        let mut got = Vec::new();
        while let Some(e) = follow.next().await {
            got.push(e.seq);
        }
        assert_eq!(got, (1..=20).collect::<Vec<_>>());
        assert_eq!(seqs(follow_stream(store, id)).await, 20);
    }

    fn follow_stream(
        store: Arc<dyn Store>,
        id: i64,
    ) -> impl Stream<Item = Result<axum::response::sse::Event, Infallible>> {
        follow(store, id, 0, None)
    }
}
