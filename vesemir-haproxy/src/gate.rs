//! Connections open at once to each HAProxy instance, counted for the whole process: every
//! [`HaproxyLoadBalancer`](crate::HaproxyLoadBalancer), whoever made it and however many
//! deployments share it, takes a slot of the same count per instance before it connects, so
//! the stats socket's limit (about 10 by default) holds across all of them.
//!
//! Each caller waits while the count has reached its own cap
//! ([`HaproxyConfig::max_connections_per_instance`](crate::HaproxyConfig)), so with one
//! configuration the count never exceeds that cap, and with several it never exceeds the largest.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use vesemir_core::ports::LbEndpoint;

/// One instance's count of open connections and the signal that one was freed.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<usize>,
    freed: Notify,
}

/// The gates of every instance this process talks to. An entry is a few words; instances are
/// few (the HAProxy boxes of the fleet), so entries are kept.
static GATES: LazyLock<Mutex<HashMap<LbEndpoint, Arc<Gate>>>> = LazyLock::new(Mutex::default);

/// Both locks guard plain counters and maps that no panic can leave half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gate(instance: &LbEndpoint) -> Arc<Gate> {
    lock(&GATES).entry(instance.clone()).or_default().clone()
}

/// A connection slot at one instance, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Gate>);

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut open = lock(&self.0.open);
            *open = open.saturating_sub(1);
        }
        self.0.freed.notify_waiters();
    }
}

/// Waits until fewer than `cap` (at least 1) connections are open to `instance` in this process,
/// and takes a slot. Unbounded here: the caller's call timeout bounds the wait.
pub(crate) async fn acquire(instance: &LbEndpoint, cap: usize) -> Slot {
    let gate = gate(instance);
    let cap = cap.max(1);
    loop {
        // Registered before the count is read, so a slot freed in between still wakes us.
        let freed = gate.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        {
            let mut open = lock(&gate.open);
            if *open < cap {
                *open += 1;
                return Slot(gate.clone());
            }
        }
        freed.await;
    }
}

/// How many connections this process has open (or is opening) to `instance` now.
pub fn open_connections(instance: &LbEndpoint) -> usize {
    let gate = lock(&GATES).get(instance).cloned();
    gate.map_or(0, |gate| *lock(&gate.open))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn slots_are_counted_for_the_process_and_freed_on_drop() {
        let instance = LbEndpoint::Unix { socket: "/gate-test/a.sock".into() };
        let first = acquire(&instance, 2).await;
        let second = acquire(&instance, 2).await;
        assert_eq!(open_connections(&instance), 2);
        let waiting = tokio::spawn({
            let instance = instance.clone();
            async move { acquire(&instance, 2).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third slot waits while two are open");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(open_connections(&instance), 2);
        drop((second, third));
        assert_eq!(open_connections(&instance), 0);
    }
}
