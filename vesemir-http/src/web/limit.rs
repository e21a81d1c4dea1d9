//! Failed sign-ins counted per username and per client address in a sliding window; past
//! either limit, sign-in is refused before the directory is asked. Kept in this instance's
//! memory (each instance of a cluster counts its own).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys remembered; past it, keys with no failure in the window are forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

/// Counts failed sign-ins.
#[derive(Debug)]
pub struct Limiter {
    window: Duration,
    per_user: usize,
    per_address: usize,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl Limiter {
    /// At most `per_user` failures per username and `per_address` per address in `window`.
    pub fn new(window: Duration, per_user: u32, per_address: u32) -> Self {
        Self {
            window,
            per_user: per_user as usize,
            per_address: per_address as usize,
            failures: Mutex::default(),
        }
    }

    /// `Err(wait)` when `user` or `address` reached its limit: the time until the oldest
    /// failure counted leaves the window.
    pub fn check(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut wait = None;
        let keys = [
            (Some(Key::User(normalize(user))), self.per_user),
            (address.map(Key::Address), self.per_address),
        ];
        for (key, limit) in keys {
            let Some(key) = key else { continue };
            if let Some(times) = failures.get_mut(&key) {
                self.forget_old(times, now);
                if times.len() >= limit {
                    let oldest = times.front().copied().unwrap_or(now);
                    let until = (oldest + self.window).saturating_duration_since(now);
                    wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failed sign-in of `user` from `address`.
    pub fn record_failure(&self, user: &str, address: Option<IpAddr>, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, times| {
                times.back().is_some_and(|t| now.saturating_duration_since(*t) < self.window)
            });
        }
        for key in [Some(Key::User(normalize(user))), address.map(Key::Address)].into_iter().flatten() {
            let times = failures.entry(key).or_default();
            self.forget_old(times, now);
            times.push_back(now);
        }
    }

    /// Forgets `user`'s failures (after a successful sign-in).
    pub fn clear_user(&self, user: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(&Key::User(normalize(user)));
    }

    fn forget_old(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            times.pop_front();
        }
    }
}

/// Usernames differing only in case or surrounding spaces are one (directories compare them so).
fn normalize(user: &str) -> String {
    user.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_per_user_and_per_address_are_limited_within_the_window() {
        let limiter = Limiter::new(Duration::from_secs(60), 2, 3);
        let t0 = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        limiter.record_failure("Alice", Some(a), t0);
        assert!(limiter.check("alice", Some(b), t0).is_ok());
        limiter.record_failure("alice ", Some(b), t0 + Duration::from_secs(10));
        assert_eq!(limiter.check("ALICE", None, t0 + Duration::from_secs(10)), Err(Duration::from_secs(50)));
        // The first failure leaves the window.
        assert!(limiter.check("alice", None, t0 + Duration::from_secs(60)).is_ok());
        // Per address: three users from one address.
        limiter.record_failure("bob", Some(a), t0);
        limiter.record_failure("carol", Some(a), t0);
        assert!(limiter.check("dave", Some(a), t0).is_err());
        assert!(limiter.check("dave", Some(b), t0).is_ok());
        limiter.clear_user("alice");
        assert!(limiter.check("alice", None, t0 + Duration::from_secs(11)).is_ok());
    }
}
