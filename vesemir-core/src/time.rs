//! Checked time arithmetic: a deadline `d` after `now` that never panics, whatever `d` is (a
//! request is bounded at 7 days, but an embedder may build a rollout with `Duration::MAX`).

use std::time::{Duration, Instant};

/// Far enough to never come in a deployment, near enough for every clock: 100 years.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, or, when that overflows the clock, a far-future instant (100 years on, or `now`
/// itself on a clock that cannot even hold that): a wait past any clock never ends in time.
pub(crate) fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).or_else(|| now.checked_add(FAR_FUTURE)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        assert!(deadline(now, Duration::MAX) >= now + Duration::from_secs(365 * 24 * 3600));
    }
}
