//! How to reach and read a Chef server: URL, client, key, TLS, timeouts, retries, attributes.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::key::{ClientKey, KeyError};
use crate::sign::SignVersion;

/// Which Chef server implementation answers. They differ in ways that matter for a complete,
/// exact search result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerFlavor {
    /// Find out on the first search (one signed `GET /search`; goiardi answers with an
    /// `X-Goiardi: yes` header) and remember it.
    #[default]
    Auto,
    /// Chef Infra Server (12 and later): organizations under `/organizations/<org>`, Solr or
    /// Elasticsearch behind search, rows in a stable order, `total` is the number of matches.
    /// The adapter pages with `rows`/`start` until `total`.
    ChefInfra,
    /// goiardi (tested with 0.11.10): one organization served at the root URL; partial search
    /// returns rows in no stable order and reports as `total` the number of rows in the page,
    /// so paging with `start` can miss nodes (and without `rows` it answers at most 1000). The
    /// adapter asks for every row in one request with a `rows` larger than any fleet and
    /// deduplicates by node name.
    Goiardi,
}

/// Retries of failed requests (5xx answers, timeouts, refused connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts after the first one.
    pub retries: u32,
    /// The wait before the first retry; each later wait doubles, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { retries: 3, initial_backoff: Duration::from_millis(200), max_backoff: Duration::from_secs(5) }
    }
}

/// Everything the Chef adapter needs. The key is kept in memory and never printed.
#[derive(Debug, Clone)]
pub struct ChefConfig {
    /// The server's URL including the organization path where there is one, e.g.
    /// `https://chef.example.com/organizations/acme`; goiardi serves at the root.
    pub server_url: String,
    /// The API client's name (`X-Ops-Userid`).
    pub client_name: String,
    /// The API client's private key.
    pub client_key: ClientKey,
    /// The signing protocol (1.3 by default; 1.0 for old servers).
    pub sign_version: SignVersion,
    /// Which server implementation answers.
    pub flavor: ServerFlavor,
    /// Verify the server's TLS certificate (on by default; turning it off is for labs only).
    pub tls_verify: bool,
    /// Extra PEM CA certificates to trust, e.g. a private CA.
    pub ca_bundle: Option<PathBuf>,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one whole request (connect, send, receive).
    pub request_timeout: Duration,
    /// Retries of 5xx answers, timeouts and refused connections.
    pub retry: RetryConfig,
    /// The node attribute that gives a host's address (dotted path), `ipaddress` by default;
    /// `fqdn` or e.g. `cloud.local_ipv4` are common alternatives.
    pub address_attribute: String,
    /// Extra node attributes (dotted paths) copied into [`vesemir_core::Host::attributes`].
    pub extra_attributes: Vec<String>,
    /// Rows per search page on Chef Infra Server.
    pub page_size: usize,
    /// Answer an empty search with an empty host list instead of an error.
    pub allow_empty: bool,
}

impl ChefConfig {
    /// A configuration with the defaults: Mixlib 1.3, server flavor detected, TLS verified, 10 s to
    /// connect, 60 s per request, 3 retries, address from `ipaddress`, pages of 1000 rows, an
    /// empty result is an error.
    pub fn new(server_url: impl Into<String>, client_name: impl Into<String>, client_key: ClientKey) -> Self {
        Self {
            server_url: server_url.into(),
            client_name: client_name.into(),
            client_key,
            sign_version: SignVersion::default(),
            flavor: ServerFlavor::default(),
            tls_verify: true,
            ca_bundle: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retry: RetryConfig::default(),
            address_attribute: "ipaddress".to_owned(),
            extra_attributes: Vec::new(),
            page_size: 1000,
            allow_empty: false,
        }
    }
}

/// Why a [`ChefConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The server URL does not parse or is not http(s).
    #[error("Chef server URL {url:?} is not a valid http(s) URL: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The CA bundle could not be read or parsed.
    #[error("cannot use the CA bundle {path}: {reason}")]
    CaBundle {
        /// The bundle's path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range or contradicts another.
    #[error("invalid Chef configuration: {0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// The client key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// [`ChefConfig`] as an operator writes it (TOML, JSON): the key is a file path, durations are
/// human-readable (`10s`). Only `server_url`, `client_name` and `client_key_path` are required.
///
/// ```toml
/// server_url = "https://chef.example.com/organizations/acme"
/// client_name = "vesemir"
/// client_key_path = "/etc/vesemir/chef.pem"
/// request_timeout = "30s"
/// address_attribute = "cloud.local_ipv4"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChefSettings {
    /// See [`ChefConfig::server_url`].
    pub server_url: String,
    /// See [`ChefConfig::client_name`].
    pub client_name: String,
    /// The PEM file of the client's private key.
    pub client_key_path: PathBuf,
    /// See [`ChefConfig::sign_version`].
    #[serde(default)]
    pub sign_version: SignVersion,
    /// See [`ChefConfig::flavor`].
    #[serde(default)]
    pub flavor: ServerFlavor,
    /// See [`ChefConfig::tls_verify`].
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// See [`ChefConfig::ca_bundle`].
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// See [`ChefConfig::connect_timeout`].
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// See [`ChefConfig::request_timeout`].
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// See [`RetryConfig::retries`].
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// See [`ChefConfig::address_attribute`].
    #[serde(default = "default_address_attribute")]
    pub address_attribute: String,
    /// See [`ChefConfig::extra_attributes`].
    #[serde(default)]
    pub extra_attributes: Vec<String>,
    /// See [`ChefConfig::page_size`].
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// See [`ChefConfig::allow_empty`].
    #[serde(default)]
    pub allow_empty: bool,
}

fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_retries() -> u32 {
    RetryConfig::default().retries
}
fn default_address_attribute() -> String {
    "ipaddress".to_owned()
}
fn default_page_size() -> usize {
    1000
}

impl ChefSettings {
    /// Reads the key file and makes the [`ChefConfig`].
    pub fn into_config(self) -> Result<ChefConfig, ConfigError> {
        let key = ClientKey::from_file(&self.client_key_path)?;
        let mut config = ChefConfig::new(self.server_url, self.client_name, key);
        config.sign_version = self.sign_version;
        config.flavor = self.flavor;
        config.tls_verify = self.tls_verify;
        config.ca_bundle = self.ca_bundle;
        config.connect_timeout = self.connect_timeout;
        config.request_timeout = self.request_timeout;
        config.retry.retries = self.retries;
        config.address_attribute = self.address_attribute;
        config.extra_attributes = self.extra_attributes;
        config.page_size = self.page_size;
        config.allow_empty = self.allow_empty;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_safe_defaults_and_load_the_key() {
        let key_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-client.pem");
        let text = format!(
            "server_url = \"https://chef.example.com/organizations/acme\"\nclient_name = \"vesemir\"\n\
             client_key_path = \"{key_path}\"\nrequest_timeout = \"30s\"\nsign_version = \"1.0\"\n"
        );
        let settings: ChefSettings = toml::from_str(&text).expect("valid settings");
        assert!(settings.tls_verify);
        assert_eq!(settings.flavor, ServerFlavor::Auto);
        let config = settings.into_config().expect("config");
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.sign_version, SignVersion::V1_0);
        assert_eq!(config.address_attribute, "ipaddress");
        assert!(!format!("{config:?}").contains("PRIVATE KEY"));
        let bad: Result<ChefSettings, _> = toml::from_str(
            "server_url = \"x\"\nclient_name = \"v\"\nclient_key_path = \"k\"\nverify = false\n",
        );
        assert!(bad.expect_err("unknown field").to_string().contains("verify"));
    }
}
