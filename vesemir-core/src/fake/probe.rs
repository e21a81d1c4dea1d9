//! [`FakeHealthProbe`]: an in-memory [`HealthProbe`] whose answers a test sets per URL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::lock;
use crate::error::PortError;
use crate::ports::{HealthProbe, HttpCheck, ProbeOutcome};

/// A health probe that passes every check except where a test said otherwise: a URL can fail
/// its first `n` checks (as an app that is still starting does). It records every check made.
#[derive(Debug, Clone, Default)]
pub struct FakeHealthProbe {
    state: Arc<Mutex<ProbeState>>,
}

#[derive(Debug, Default)]
struct ProbeState {
    /// Checks of a URL that still fail, by URL.
    failing: BTreeMap<String, u32>,
    /// Every check made, in order.
    checks: Vec<HttpCheck>,
}

impl FakeHealthProbe {
    /// A probe that passes everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `times` checks of `url` do not pass ("status 503").
    pub fn fail_first(&self, url: &str, times: u32) {
        lock(&self.state).failing.insert(url.to_owned(), times);
    }

    /// Every check made so far.
    pub fn checks(&self) -> Vec<HttpCheck> {
        lock(&self.state).checks.clone()
    }
}

#[async_trait]
impl HealthProbe for FakeHealthProbe {
    async fn check(&self, check: &HttpCheck) -> Result<ProbeOutcome, PortError> {
        let mut state = lock(&self.state);
        state.checks.push(check.clone());
        match state.failing.get_mut(&check.url) {
            Some(left) if *left > 0 => {
                *left -= 1;
                Ok(ProbeOutcome::NotPassed("status 503".into()))
            }
            _ => Ok(ProbeOutcome::Passed),
        }
    }
}
