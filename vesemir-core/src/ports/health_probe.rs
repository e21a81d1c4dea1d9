//! [`HealthProbe`]: the orchestrator's own health check of a host (an HTTP request from where
//! Vesemir runs), as opposed to a command run on the host through the [`Executor`].
//!
//! [`Executor`]: super::Executor

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::PortError;

/// One HTTP health check: a GET of `url` passes when the answer has `status` and, if given,
/// its body contains `body_contains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// The URL, rendered for the host (`http://` or `https://`).
    pub url: String,
    /// The status code that passes.
    pub status: u16,
    /// Text the body must contain, if any.
    pub body_contains: Option<String>,
    /// How long this one request may take, connect included.
    pub timeout: Duration,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The answer had the status (and the text) asked for.
    Passed,
    /// An answer came but did not pass, or no answer came (refused, reset, timed out): why, in
    /// words for the host's error ("status 503", "connection refused"...).
    NotPassed(String),
}

/// Checks a host's health from the orchestrator. Adapters: `vesemir-probe` (HTTP over reqwest,
/// one connection pool per probe, so polling every few milliseconds reuses connections).
#[async_trait]
pub trait HealthProbe: Send + Sync + Debug {
    /// One check. A check that could not be made at all for a reason no retry mends (an
    /// invalid URL) is an `Err`; an unhealthy or unreachable host is
    /// [`ProbeOutcome::NotPassed`].
    async fn check(&self, check: &HttpCheck) -> Result<ProbeOutcome, PortError>;
}

#[async_trait]
impl<T: HealthProbe + ?Sized> HealthProbe for &T {
    async fn check(&self, check: &HttpCheck) -> Result<ProbeOutcome, PortError> {
        (**self).check(check).await
    }
}

#[async_trait]
impl<T: HealthProbe + ?Sized> HealthProbe for Box<T> {
    async fn check(&self, check: &HttpCheck) -> Result<ProbeOutcome, PortError> {
        (**self).check(check).await
    }
}

#[async_trait]
impl<T: HealthProbe + ?Sized> HealthProbe for Arc<T> {
    async fn check(&self, check: &HttpCheck) -> Result<ProbeOutcome, PortError> {
        (**self).check(check).await
    }
}
