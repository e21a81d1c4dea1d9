//! Failed sign-ins counted per username and per client address in a sliding window; past
//! either limit, sign-in is refused before the directory is asked.
//!
//! The counts live in the [`Store`] (`sign_in_failures`: one row per failure and key), so
//! every instance on one database counts together: an attacker cannot multiply the limits by
//! the number of instances. No copy is kept in memory: a cached "not limited" would miss the
//! failures other instances count. Nor can racing sign-ins: each attempt is counted as a
//! failure before the directory is asked, in one transaction with the check
//! ([`Store::take_sign_in_attempt`]), and forgiven when it was none (a success, or a directory
//! that could not be asked).

use std::net::IpAddr;
use std::time::Duration;

use crate::store::{SignInAttempt, SignInFailures, SignInKey, Store, StoreError};

/// A sign-in attempt counted as a failure (its rows in the store) until forgiven.
#[derive(Debug)]
#[must_use = "an attempt that was no failure must be forgiven"]
pub struct Attempt {
    rows: Vec<i64>,
}

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

    /// Takes one attempt of `user` from `address`, counted as a failure until
    /// [`forgive`](Self::forgive)n: `Ok(Err(wait))` when either reached its limit (nothing is
    /// counted then), the wait being until the oldest failure counted leaves the window.
    pub async fn take(
        &self,
        store: &dyn Store,
        user: &str,
        address: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<Result<Attempt, Duration>, StoreError> {
        let since_ms = now_ms.saturating_sub(self.window_ms());
        let limits = self.keys(user, address);
        match store.take_sign_in_attempt(&limits, since_ms, now_ms).await? {
            SignInAttempt::Taken(rows) => Ok(Ok(Attempt { rows })),
            SignInAttempt::Limited(keys) => {
                let wait = keys
                    .into_iter()
                    .map(|failures| until_oldest_leaves(failures, self.window, now_ms))
                    .max()
                    .unwrap_or(Duration::from_millis(1));
                Ok(Err(wait))
            }
        }
    }

    /// Takes back an attempt that was no failure.
    pub async fn forgive(&self, store: &dyn Store, attempt: Attempt) -> Result<(), StoreError> {
        store.forgive_sign_in_attempt(&attempt.rows).await
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

/// How long a key at its limit waits: until its oldest failure counted leaves the window (at
/// least a millisecond).
fn until_oldest_leaves(failures: SignInFailures, window: Duration, now_ms: i64) -> Duration {
    let oldest = failures.oldest_ms.unwrap_or(now_ms);
    let leaves_ms = oldest.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    Duration::from_millis(u64::try_from(leaves_ms.saturating_sub(now_ms)).unwrap_or(0).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_at_its_limit_waits_until_its_oldest_failure_leaves_the_window() {
        let window = Duration::from_secs(60);
        let failures = |oldest_ms| SignInFailures { count: 2, oldest_ms: Some(oldest_ms) };
        assert_eq!(until_oldest_leaves(failures(0), window, 10_000), Duration::from_secs(50));
        // At the window's edge, still a wait (the store counts `at_ms >= since`).
        assert_eq!(until_oldest_leaves(failures(0), window, 60_000), Duration::from_millis(1));
        assert_eq!(until_oldest_leaves(SignInFailures::default(), window, 5), Duration::from_secs(60));
    }

    #[test]
    fn usernames_differing_in_case_or_spaces_are_one_key() {
        assert_eq!(SignInKey::user(" Alice "), SignInKey::user("alice"));
        assert_eq!(SignInKey::user("Alice").as_column(), "user:alice");
        assert_eq!(SignInKey::Address([10, 0, 0, 1].into()).as_column(), "address:10.0.0.1");
    }
}
