//! How long each lab host's app is down when it restarts: a fixed time (the default), or a time
//! per host drawn from a seeded distribution like real restarts, which vary (issue 15's
//! author measured the deploy step at a median of 1.46 s and a maximum of 3.1 s over 40 hosts;
//! strict batches lose there, since every batch waits for its slowest host).
//!
//! The varied times are a log-normal distribution: median [`VARIED_MEDIAN`], σ
//! [`VARIED_SIGMA`] of the logarithm, clamped to [`VARIED_MIN`]..=[`VARIED_MAX`]. The lab's
//! step takes the app's downtime plus ~0.13 s (SSH channel, script, polling): with the
//! benchmark's seed (15) and 40 hosts the downtimes have a median of 1.29 s and a maximum of
//! 2.87 s, so steps of about 1.42 s and 3.0 s. Each host's time depends only on its index and the
//! seed, so every run on a lab with the same seed (the floor and every Vesemir variant of a
//! benchmark) sees the same slow hosts at the same places.

use std::time::Duration;

/// The median of the varied downtimes.
pub const VARIED_MEDIAN: Duration = Duration::from_millis(1400);
/// The standard deviation of the varied downtimes' natural logarithm.
pub const VARIED_SIGMA: f64 = 0.4;
/// The shortest varied downtime.
pub const VARIED_MIN: Duration = Duration::from_millis(500);
/// The longest varied downtime.
pub const VARIED_MAX: Duration = Duration::from_millis(3000);

/// How long the lab's apps are down when they restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartTimes {
    /// Every host's app is down this long at every restart.
    Fixed(Duration),
    /// Host `i`'s app is down [`RestartTimes::time`]`(i)` at every restart: log-normal, from
    /// this seed (see the module's doc).
    Varied {
        /// The seed: the same seed gives every host the same time again.
        seed: u64,
    },
}

impl Default for RestartTimes {
    fn default() -> Self {
        Self::Fixed(super::app::RESTART_DOWNTIME)
    }
}

impl RestartTimes {
    /// The downtime of host number `index` (0-based, in the lab's name order).
    pub fn time(&self, index: usize) -> Duration {
        match *self {
            Self::Fixed(time) => time,
            Self::Varied { seed } => {
                let mut state = seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                // Two uniforms in (0, 1] and Box-Muller: one standard normal draw.
                let u1 = unit(splitmix64(&mut state));
                let u2 = unit(splitmix64(&mut state));
                let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let seconds = VARIED_MEDIAN.as_secs_f64() * (VARIED_SIGMA * normal).exp();
                Duration::from_secs_f64(seconds.clamp(VARIED_MIN.as_secs_f64(), VARIED_MAX.as_secs_f64()))
            }
        }
    }
}

impl std::fmt::Display for RestartTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(time) => write!(f, "fixed {} ms", time.as_millis()),
            Self::Varied { seed } => write!(
                f,
                "varied (log-normal, median {} ms, sigma {VARIED_SIGMA}, {}..{} ms, seed {seed})",
                VARIED_MEDIAN.as_millis(),
                VARIED_MIN.as_millis(),
                VARIED_MAX.as_millis()
            ),
        }
    }
}

/// SplitMix64's next output: a small, good-enough generator with no dependency.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in (0, 1] from 53 random bits.
fn unit(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varied_times_are_the_same_for_a_seed_and_look_like_the_issues_restarts() {
        let varied = RestartTimes::Varied { seed: 15 };
        let times: Vec<Duration> = (0..200).map(|i| varied.time(i)).collect();
        assert_eq!(times, (0..200).map(|i| varied.time(i)).collect::<Vec<_>>(), "deterministic");
        assert_ne!(times, (0..200).map(|i| RestartTimes::Varied { seed: 16 }.time(i)).collect::<Vec<_>>());
        let mut sorted = times.clone();
        sorted.sort();
        let median = sorted[100];
        assert!(
            (Duration::from_millis(1200)..=Duration::from_millis(1550)).contains(&median),
            "median {median:?}"
        );
        let slowest = sorted[199];
        assert!(slowest >= Duration::from_millis(2300) && slowest <= VARIED_MAX, "slowest {slowest:?}");
        assert!(sorted[0] >= VARIED_MIN);
        assert_eq!(RestartTimes::default().time(7), super::super::app::RESTART_DOWNTIME);
    }
}
