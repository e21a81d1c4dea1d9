//! One retry policy for every loop that tries again: the Chef client, the SSH connector, the
//! server's event writer and the CLI's event-stream follower.
//!
//! [`Backoff`] is data (how many attempts, the first and the largest delay, how much jitter);
//! [`Retries`] walks it, answering the delay before each next attempt or `None` when the
//! attempts are spent. It reads no clock and draws no randomness of its own: the caller gives a
//! seed, so tests are deterministic and the core stays free of IO.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a loop retries: `attempts` tries in all (the first included), waiting `initial` after
/// the first failure, doubling up to `max`, each delay shortened by up to `jitter` of itself at
/// random so that many clients do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Tries in all, the first included (1: never retry).
    pub attempts: u32,
    /// The delay after the first failure.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// The largest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// The share of each delay (0.0 to 1.0) that may be taken off at random.
    pub jitter: f64,
}

impl Default for Backoff {
    /// Three attempts, 200 ms then 400 ms, a fifth of each delay at random.
    fn default() -> Self {
        Self { attempts: 3, initial: Duration::from_millis(200), max: Duration::from_secs(5), jitter: 0.2 }
    }
}

impl Backoff {
    /// `attempts` tries with delays from `initial` doubling up to `max`, without jitter.
    pub fn new(attempts: u32, initial: Duration, max: Duration) -> Self {
        Self { attempts, initial, max, jitter: 0.0 }
    }

    /// The same policy with `jitter` (clamped to 0.0..=1.0).
    #[must_use]
    pub fn with_jitter(self, jitter: f64) -> Self {
        let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        Self { jitter, ..self }
    }

    /// The delay before retry number `retry` (1 for the first retry) without jitter: `initial`
    /// doubled `retry - 1` times, at most `max`.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max.max(self.initial))
    }

    /// A walk through this policy; `seed` drives the jitter (any value; the same seed gives the
    /// same delays).
    pub fn retries(&self, seed: u64) -> Retries {
        Retries { policy: *self, failures: 0, random: SplitMix64(seed) }
    }

    /// Checks the policy: at least one attempt, `initial` not above `max`, jitter in range.
    pub fn check(&self) -> Result<(), String> {
        if self.attempts == 0 {
            return Err("attempts must be at least 1 (1 means no retry)".into());
        }
        if self.initial > self.max {
            return Err(format!(
                "initial ({}) is above max ({})",
                humantime::format_duration(self.initial),
                humantime::format_duration(self.max)
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!("jitter {} is not between 0.0 and 1.0", self.jitter));
        }
        Ok(())
    }
}

/// A retry loop's position in its [`Backoff`]: call [`after_failure`](Self::after_failure) after
/// each failed attempt.
#[derive(Debug, Clone)]
pub struct Retries {
    policy: Backoff,
    failures: u32,
    random: SplitMix64,
}

impl Retries {
    /// One more attempt failed: the delay before the next, or `None` when every attempt is
    /// spent.
    pub fn after_failure(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.policy.attempts {
            return None;
        }
        let base = self.policy.base_delay(self.failures);
        if self.policy.jitter <= 0.0 {
            return Some(base);
        }
        let cut = base.mul_f64(self.policy.jitter * self.random.next_unit());
        Some(base.saturating_sub(cut))
    }

    /// Attempts made so far (failed ones; the one in progress not counted).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The policy being walked.
    pub fn policy(&self) -> &Backoff {
        &self.policy
    }
}

/// A small, fast generator for jitter (SplitMix64): not for anything secret.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in 0.0..1.0.
    fn next_unit(&mut self) -> f64 {
        // The top 53 bits fill an f64's mantissa exactly.
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_max_and_stop_after_the_attempts() {
        let policy = Backoff::new(5, Duration::from_millis(100), Duration::from_millis(300));
        let mut retries = policy.retries(0);
        let delays: Vec<_> = std::iter::from_fn(|| retries.after_failure()).collect();
        assert_eq!(
            delays,
            [100, 200, 300, 300].map(Duration::from_millis),
            "4 retries after 4 failures of 5 attempts"
        );
        assert_eq!(retries.failures(), 5);
    }

    #[test]
    fn one_attempt_never_retries() {
        let mut retries = Backoff::new(1, Duration::from_secs(1), Duration::from_secs(1)).retries(7);
        assert_eq!(retries.after_failure(), None);
    }

    #[test]
    fn jitter_only_shortens_within_its_share_and_varies() {
        let policy = Backoff::new(50, Duration::from_secs(1), Duration::from_secs(1)).with_jitter(0.5);
        let mut retries = policy.retries(42);
        let delays: Vec<_> = std::iter::from_fn(|| retries.after_failure()).collect();
        assert_eq!(delays.len(), 49);
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1) && *d >= Duration::from_millis(500)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40, "jitter spreads the delays: {distinct:?}");
        let again: Vec<_> = {
            let mut retries = policy.retries(42);
            std::iter::from_fn(|| retries.after_failure()).collect()
        };
        assert_eq!(delays, again, "the same seed gives the same delays");
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let policy = Backoff::new(u32::MAX, Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(policy.base_delay(u32::MAX), Duration::MAX);
    }

    #[test]
    fn check_names_what_is_wrong() {
        assert!(Backoff::new(0, Duration::ZERO, Duration::ZERO).check().is_err());
        let inverted = Backoff::new(2, Duration::from_secs(2), Duration::from_secs(1));
        assert!(inverted.check().expect_err("initial above max").contains("initial"));
        assert!(Backoff::default().check().is_ok());
    }

    #[test]
    fn reads_from_toml_with_humantime_durations_and_defaults() {
        let policy: Backoff = toml::from_str("attempts = 4\ninitial = \"50ms\"").expect("valid");
        assert_eq!(policy.attempts, 4);
        assert_eq!(policy.initial, Duration::from_millis(50));
        assert_eq!(policy.max, Backoff::default().max);
    }
}
