//! The error the ports return: variants the rollout can act on, plus one that keeps an adapter's
//! own error as its source.

use std::time::Duration;

/// A boxed error from an adapter or a transport, kept as the source of a [`PortError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong when a port talked to the outside world.
///
/// The rollout decides on the variant: [`Unreachable`](PortError::Unreachable) marks a host
/// unreachable rather than failed, [`Timeout`](PortError::Timeout) and the others fail the host.
/// Adapters convert their private errors into this type and never put secrets in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The target could not be reached at all (connection refused, no route, DNS).
    #[error("{target} is unreachable: {source}")]
    Unreachable {
        /// What could not be reached, e.g. `web-01 (10.0.0.1:22)`.
        target: String,
        /// The transport's error.
        #[source]
        source: BoxError,
    },
    /// An operation did not finish within its bound.
    #[error("{operation} timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        /// What timed out, e.g. `drain of shop/web-01`.
        operation: String,
        /// The bound that was exceeded.
        after: Duration,
    },
    /// The remote side understood the request and refused it.
    #[error("{target} refused: {reason}")]
    Rejected {
        /// Who refused.
        target: String,
        /// Its reason, as it gave it.
        reason: String,
    },
    /// Authentication failed: a wrong key, user or token. Not worth retrying.
    #[error("authentication to {target} failed: {reason}")]
    Unauthorized {
        /// Where authentication failed.
        target: String,
        /// Why, with a hint where there is one (never the secret itself).
        reason: String,
    },
    /// Something named does not exist: a backend, a server, an organization.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `server web-01 in backend shop`.
        what: String,
    },
    /// An adapter's own error that fits no other variant.
    #[error("{adapter}: {source}")]
    Adapter {
        /// The adapter's name, e.g. `haproxy`.
        adapter: &'static str,
        /// The adapter's error.
        #[source]
        source: BoxError,
    },
}

impl PortError {
    /// A [`PortError::Unreachable`] from any error.
    pub fn unreachable(target: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unreachable { target: target.into(), source: source.into() }
    }

    /// A [`PortError::Timeout`].
    pub fn timeout(operation: impl Into<String>, after: Duration) -> Self {
        Self::Timeout { operation: operation.into(), after }
    }

    /// A [`PortError::Rejected`].
    pub fn rejected(target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Rejected { target: target.into(), reason: reason.into() }
    }

    /// A [`PortError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    /// Whether this error means the target could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// Whether this error is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// The error and all its sources on one line, `outer: inner: innermost`.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(inner) = source {
            let inner_text = inner.to_string();
            if !text.contains(&inner_text) {
                text.push_str(": ");
                text.push_str(&inner_text);
            }
            source = inner.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_reads_well() {
        let e = PortError::timeout("drain of shop/web-01", Duration::from_secs(90));
        assert_eq!(e.to_string(), "drain of shop/web-01 timed out after 1m 30s");
        assert!(e.is_timeout());
    }

    #[test]
    fn chain_includes_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = PortError::unreachable("web-01 (10.0.0.1:22)", io);
        assert_eq!(e.chain(), "web-01 (10.0.0.1:22) is unreachable: connection refused");
    }
}
