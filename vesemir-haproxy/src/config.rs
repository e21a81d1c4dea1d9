//! How the adapter talks to HAProxy: timeouts, polling interval and reply size limit.

use std::time::Duration;

/// Settings of the HAProxy adapter. Every network call is bounded by these timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// How long connecting to one instance's runtime API may take.
    pub connect_timeout: Duration,
    /// How long one instance may take to send its whole reply to one command.
    pub read_timeout: Duration,
    /// How often [`wait_drained`](vesemir_core::ports::LoadBalancer::wait_drained) and
    /// [`wait_up`](vesemir_core::ports::LoadBalancer::wait_up) ask the instances again.
    pub poll_interval: Duration,
    /// The largest reply accepted, in bytes (a `show stat` of thousands of servers fits).
    pub max_reply_bytes: u64,
}

impl Default for HaproxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
            max_reply_bytes: 32 * 1024 * 1024,
        }
    }
}
