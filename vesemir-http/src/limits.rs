//! Limits per team and per token, so that one team cannot crowd out the others: a quota of
//! deployments each team may have waiting in the queue ([`TeamQueue`],
//! `limits.max_queued_per_team`), and a cap on the event streams one token keeps open
//! ([`EventStreams`], `limits.max_event_streams_per_token`). Both answer 429 naming the limit;
//! both show in `/metrics` (`vesemir_team_deployments_queued{team}`,
//! `vesemir_event_streams_open`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::metrics::Metrics;

/// Both maps hold plain counts that no panic can leave half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Deployments each team has waiting in this server's queue now.
#[derive(Debug, Default)]
pub struct TeamQueue {
    queued: Mutex<HashMap<String, usize>>,
}

impl TeamQueue {
    /// Counts one more deployment of `team` as queued, unless it has `quota` queued already:
    /// then the count it has.
    pub fn enter(&self, team: &str, quota: usize, metrics: &Metrics) -> Result<(), usize> {
        let mut queued = lock(&self.queued);
        let count = queued.entry(team.to_owned()).or_default();
        if *count >= quota {
            return Err(*count);
        }
        *count += 1;
        metrics.team_queued(team, *count);
        Ok(())
    }

    /// One deployment of `team` left the queue (it started, or was cancelled while queued).
    pub fn leave(&self, team: &str, metrics: &Metrics) {
        let mut queued = lock(&self.queued);
        if let Some(count) = queued.get_mut(team) {
            *count = count.saturating_sub(1);
            metrics.team_queued(team, *count);
        }
    }

    /// How many deployments `team` has queued now.
    pub fn queued(&self, team: &str) -> usize {
        lock(&self.queued).get(team).copied().unwrap_or_default()
    }
}

/// Event streams open now, per token (by the principal's name, which is the token's).
#[derive(Debug)]
pub struct EventStreams {
    open: Mutex<HashMap<String, usize>>,
    metrics: Arc<Metrics>,
}

/// One open event stream, counted until it is dropped (the stream ended or its client left).
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<EventStreams>,
    token: String,
}

impl EventStreams {
    /// No stream open yet; the total open goes to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { open: Mutex::default(), metrics }
    }

    /// Counts one more stream of `token`, unless it has `cap` open already: then how many it has.
    pub fn open(self: &Arc<Self>, token: &str, cap: usize) -> Result<StreamSlot, usize> {
        let mut open = lock(&self.open);
        let count = open.entry(token.to_owned()).or_default();
        if *count >= cap {
            return Err(*count);
        }
        *count += 1;
        let total = open.values().sum();
        drop(open);
        self.metrics.streams_open(total);
        Ok(StreamSlot { streams: self.clone(), token: token.to_owned() })
    }

    /// Streams `token` has open now.
    pub fn open_by(&self, token: &str) -> usize {
        lock(&self.open).get(token).copied().unwrap_or_default()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.streams.open);
        if let Some(count) = open.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.token);
            }
        }
        let total = open.values().sum();
        drop(open);
        self.streams.metrics.streams_open(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_over_its_quota_is_refused_and_others_are_not() {
        let (queue, metrics) = (TeamQueue::default(), Metrics::new());
        assert!(queue.enter("payments", 2, &metrics).is_ok());
        assert!(queue.enter("payments", 2, &metrics).is_ok());
        assert_eq!(queue.enter("payments", 2, &metrics), Err(2));
        assert!(queue.enter("search", 2, &metrics).is_ok());
        queue.leave("payments", &metrics);
        assert!(queue.enter("payments", 2, &metrics).is_ok());
        assert!(metrics.render().contains("vesemir_team_deployments_queued{team=\"payments\"} 2"));
    }

    #[test]
    fn streams_are_counted_per_token_until_dropped() {
        let metrics = Arc::new(Metrics::new());
        let streams = Arc::new(EventStreams::new(metrics.clone()));
        let first = streams.open("ci", 2).expect("first");
        let _second = streams.open("ci", 2).expect("second");
        assert_eq!(streams.open("ci", 2).err(), Some(2));
        let _other = streams.open("oncall", 2).expect("another token");
        assert!(metrics.render().contains("vesemir_event_streams_open 3"), "{}", metrics.render());
        drop(first);
        assert_eq!(streams.open_by("ci"), 1);
        assert!(streams.open("ci", 2).is_ok());
    }
}
