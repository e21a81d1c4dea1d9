//! How the adapter talks to HAProxy: timeouts, polling interval and reply size limit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the HAProxy adapter. Every network call is bounded by these timeouts.
///
/// Front ends can read it from their config; durations are written like `"2s"` or `"500ms"`,
/// and missing fields take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaproxyConfig {
    /// How long connecting to one instance's runtime API may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one instance may take to send its whole reply to one command.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How often [`wait_drained`](vesemir_core::ports::LoadBalancer::wait_drained) and
    /// [`wait_up`](vesemir_core::ports::LoadBalancer::wait_up) ask the instances again
    /// (default 25 ms: both waits are on a host's time out of rotation, and one poll is one
    /// `show stat` of the server's own row per instance, a fraction of a millisecond there).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The largest reply accepted, in bytes (a `show stat` of thousands of servers fits).
    pub max_reply_bytes: u64,
    /// Connections open at once to one instance's runtime API, counted for the whole process
    /// (every adapter and every deployment sharing it). HAProxy's stats socket accepts 10 by
    /// default (`maxconn` on the `stats socket` line raises it); past that the kernel drops
    /// connection requests and retries them a second later.
    pub max_connections_per_instance: usize,
}

impl Default for HaproxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(25),
            max_reply_bytes: 32 * 1024 * 1024,
            max_connections_per_instance: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_json_with_defaults() {
        let config: HaproxyConfig = serde_json::from_str(r#"{"read_timeout": "750ms"}"#).unwrap();
        assert_eq!(config.read_timeout, Duration::from_millis(750));
        assert_eq!(config.connect_timeout, HaproxyConfig::default().connect_timeout);
        assert!(
            serde_json::from_str::<HaproxyConfig>(r#"{"read_timout": "1s"}"#).is_err(),
            "typos are refused"
        );
    }
}
