//! `vesemir-probe`: the [`HealthProbe`] port over HTTP(S) with reqwest. One [`HttpProbe`] keeps
//! one connection pool, so a host polled every 20 ms is asked over a kept-alive connection
//! rather than a new TCP (and TLS) handshake per request.
//!
//! A check passes when the answer has the status asked for and, if asked, its body contains the
//! text. No answer (refused, reset, timed out) or another answer is
//! [`ProbeOutcome::NotPassed`] with the reason: the rollout polls again. Only a check that
//! cannot be made at all (a URL reqwest cannot parse) is an error, `Rejected`.

#![warn(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use vesemir_core::error::PortError;
use vesemir_core::ports::{HealthProbe, HttpCheck, ProbeOutcome};

/// Bytes of a body read at most when looking for `body_contains`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The HTTP health probe: GET requests through one pooled reqwest client.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: reqwest::Client,
}

impl HttpProbe {
    /// A probe with its own connection pool: no redirects followed (a health endpoint that
    /// redirects answers with the redirect's status), connections kept 90 s when idle.
    pub fn new() -> Result<Self, PortError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("vesemir-probe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PortError::rejected("the HTTP health probe", e.to_string()))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl HealthProbe for HttpProbe {
    async fn check(&self, check: &HttpCheck) -> Result<ProbeOutcome, PortError> {
        let url = reqwest::Url::parse(&check.url)
            .map_err(|e| PortError::rejected(check.url.clone(), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PortError::rejected(check.url.clone(), "only http:// and https:// can be checked"));
        }
        let mut response = match self.client.get(url).timeout(check.timeout).send().await {
            Ok(response) => response,
            Err(e) => return Ok(ProbeOutcome::NotPassed(describe(&e, check.timeout))),
        };
        let status = response.status().as_u16();
        if status != check.status {
            return Ok(ProbeOutcome::NotPassed(format!("status {status}, expected {}", check.status)));
        }
        let Some(wanted) = &check.body_contains else { return Ok(ProbeOutcome::Passed) };
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if contains(&body, wanted.as_bytes()) {
                        return Ok(ProbeOutcome::Passed);
                    }
                    if body.len() >= BODY_LIMIT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Ok(ProbeOutcome::NotPassed(describe(&e, check.timeout))),
            }
        }
        Ok(ProbeOutcome::NotPassed(format!("status {status}, but the body does not contain {wanted:?}")))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Why no (whole) answer came, in words: the innermost cause ("Connection refused (os error
/// 111)") rather than reqwest's outer "error sending request".
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {}ms", timeout.as_millis());
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let kind = if error.is_connect() { "connect failed" } else { "request failed" };
    format!("{kind}: {cause}")
}
