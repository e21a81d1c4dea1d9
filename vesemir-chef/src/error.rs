//! The adapter's own errors, and how each becomes a [`PortError`] the rollout can act on.

use std::time::Duration;

use vesemir_core::PortError;

/// What went wrong talking to the Chef server. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChefError {
    #[error("signing the request failed: {0}")]
    Sign(#[from] openssl::error::ErrorStack),
    #[error("{url} answered 401 Unauthorized ({message}): check that client {client:?} exists on the server and that the configured key is its current private key, and that this machine's clock is within the server's allowed skew (15 minutes by default), since every request is signed with a timestamp")]
    Unauthorized { url: String, client: String, message: String },
    #[error("{url} answered 403 Forbidden ({message}): client {client:?} is known but may not read this; grant it read access to nodes and search")]
    Forbidden { url: String, client: String, message: String },
    #[error("{url} answered 404 Not Found ({message}): check the organization in the server URL (Chef Infra Server: https://host/organizations/<org>; goiardi serves one organization at the root) and the search index name")]
    NotFound { url: String, message: String },
    #[error("{url} answered 200 with an empty body instead of JSON: goiardi does this for paths it does not serve, such as /organizations/<org>; check the organization in the server URL")]
    EmptyBody { url: String },
    #[error("{url} refused the request with {status} ({message})")]
    BadRequest { url: String, status: u16, message: String },
    #[error("{url} answered {status} ({message}) on every one of {attempts} attempts")]
    ServerError { url: String, status: u16, message: String, attempts: u32 },
    #[error("no answer from {url} within {after:?} on any of {attempts} attempts")]
    Timeout { url: String, after: Duration, attempts: u32 },
    #[error("cannot connect to {url} ({attempts} attempts): {source}")]
    Connect {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered something that is not the expected JSON: {reason}")]
    Decode { url: String, reason: String },
    #[error("no hosts match {selector} in Chef at {server}: refusing to deploy to nothing (check the tags, roles, recipes and environment)")]
    NoHosts { selector: String, server: String },
    #[error("Chef node {node:?}: {reason}")]
    InvalidNode { node: String, reason: String },
    #[error("the Chef search was inconsistent: {0}")]
    Inconsistent(String),
}

impl From<ChefError> for PortError {
    fn from(error: ChefError) -> Self {
        match error {
            ChefError::Unauthorized { ref url, .. } => {
                PortError::Unauthorized { target: url.clone(), reason: error.to_string() }
            }
            ChefError::Forbidden { ref url, .. } | ChefError::BadRequest { ref url, .. } => {
                PortError::rejected(url.clone(), error.to_string())
            }
            ChefError::NotFound { .. } | ChefError::EmptyBody { .. } | ChefError::NoHosts { .. } => {
                PortError::not_found(error.to_string())
            }
            ChefError::Timeout { ref url, after, attempts } => {
                PortError::timeout(format!("Chef request to {url} ({attempts} attempts)"), after)
            }
            ChefError::Connect { ref url, .. } => PortError::unreachable(url.clone(), error),
            ChefError::Sign(_)
            | ChefError::ServerError { .. }
            | ChefError::Decode { .. }
            | ChefError::InvalidNode { .. }
            | ChefError::Inconsistent(_) => PortError::Adapter { adapter: "chef", source: Box::new(error) },
        }
    }
}
