//! Failed sign-ins counted per username and per client address in a sliding window; past
//! either limit, sign-in is refused before the directory is asked.
//!
//! The counts live in the [`Store`] (`sign_in_failures`: one row per failure and key), so
//! every instance on one database counts together: an attacker cannot multiply the limits by
//! the number of instances. No copy is kept in memory: a cached "not limited" would miss the
//! failures other instances count. A check and the failure it may lead to are not one
//! transaction: sign-ins racing each other past the check can overshoot a limit by how many
//! run at once, never more.

use std::net::IpAddr;
use std::time::Duration;

use crate::store::{SignInFailures, SignInKey, Store, StoreError};

/// The limits, and the store calls that apply them.
#[derive(Debug, Clone)]
pub struct Limiter {
    window: Duration,
    per_user: u32,
    per_address: u32,
}

impl Limiter {
    /// At most `per_user` failures per username and `per_address` per address in `window`.
    pub fn new(window: Duration, per_user: u32, per_address: u32) -> Self {
        Self { window, per_user, per_address }
    }

    /// How long failures are counted.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// `Ok(Some(wait))` when `user` or `address` reached its limit: the time until the oldest
    /// failure counted leaves the window.
    pub async fn check(
        &self,
        store: &dyn Store,
        user: &str,
        address: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let since_ms = now_ms.saturating_sub(self.window_ms());
        let mut wait: Option<Duration> = None;
        for (key, limit) in self.keys(user, address) {
            let failures = store.sign_in_failures(&key, since_ms).await?;
            if let Some(until) = wait_for(failures, limit, self.window, now_ms) {
                wait = Some(wait.map_or(until, |w| w.max(until)));
            }
        }
        Ok(wait)
    }

    /// Counts a failed sign-in of `user` from `address`.
    pub async fn record_failure(
        &self,
        store: &dyn Store,
        user: &str,
        address: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let keys: Vec<SignInKey> = self.keys(user, address).into_iter().map(|(key, _)| key).collect();
        store.record_sign_in_failure(&keys, now_ms).await
    }

    /// Forgets `user`'s failures (after a successful sign-in); the address's stay.
    pub async fn clear_user(&self, store: &dyn Store, user: &str) -> Result<(), StoreError> {
        store.clear_sign_in_failures(&SignInKey::user(user)).await
    }

    fn keys(&self, user: &str, address: Option<IpAddr>) -> Vec<(SignInKey, u32)> {
        let mut keys = vec![(SignInKey::user(user), self.per_user)];
        if let Some(address) = address {
            keys.push((SignInKey::Address(address), self.per_address));
        }
        keys
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The wait before one more attempt of a key with `failures` in the window may be made, if it
/// reached `limit`: until its oldest failure leaves the window (at least a millisecond).
fn wait_for(failures: SignInFailures, limit: u32, window: Duration, now_ms: i64) -> Option<Duration> {
    if failures.count < u64::from(limit) {
        return None;
    }
    let oldest = failures.oldest_ms.unwrap_or(now_ms);
    let leaves_ms = oldest.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let wait_ms = u64::try_from(leaves_ms.saturating_sub(now_ms)).unwrap_or(0).max(1);
    Some(Duration::from_millis(wait_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_at_its_limit_waits_until_its_oldest_failure_leaves_the_window() {
        let window = Duration::from_secs(60);
        let failures = |count, oldest_ms| SignInFailures { count, oldest_ms: Some(oldest_ms) };
        assert_eq!(wait_for(SignInFailures::default(), 1, window, 0), None);
        assert_eq!(wait_for(failures(1, 0), 2, window, 10_000), None);
        assert_eq!(wait_for(failures(2, 0), 2, window, 10_000), Some(Duration::from_secs(50)));
        // Racing sign-ins may overshoot: still limited, same wait.
        assert_eq!(wait_for(failures(3, 0), 2, window, 10_000), Some(Duration::from_secs(50)));
        // At the window's edge, still a wait (the store counts `at_ms >= since`).
        assert_eq!(wait_for(failures(2, 0), 2, window, 60_000), Some(Duration::from_millis(1)));
    }

    #[test]
    fn usernames_differing_in_case_or_spaces_are_one_key() {
        assert_eq!(SignInKey::user(" Alice "), SignInKey::user("alice"));
        assert_eq!(SignInKey::user("Alice").as_column(), "user:alice");
        assert_eq!(SignInKey::Address([10, 0, 0, 1].into()).as_column(), "address:10.0.0.1");
    }
}
