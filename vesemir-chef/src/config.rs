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

/// Everything the Chef adapter needs, as an operator writes it (TOML, JSON) or as code builds
/// it with [`ChefConfig::new`]. Durations are human-readable (`"10s"`); only `server_url`,
/// `client_name` and `client_key_path` are required, every other field has the default that
/// [`ChefConfig::new`] gives. The key is read when the client is made, kept in memory and never
/// printed.
///
/// ```toml
/// server_url = "https://chef.example.com/organizations/acme"
/// client_name = "vesemir"
/// client_key_path = "/etc/vesemir/chef.pem"
/// request_timeout = "30s"
/// address_attribute = "cloud.local_ipv4"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChefConfig {
    /// The server's URL including the organization path where there is one, e.g.
    /// `https://chef.example.com/organizations/acme`; goiardi serves at the root.
    pub server_url: String,
    /// The API client's name (`X-Ops-Userid`).
    pub client_name: String,
    /// The PEM file of the API client's private key, read by [`ChefConfig::load_key`] (and so
    /// when the client is made) unless [`client_key`](Self::client_key) holds the key already.
    pub client_key_path: PathBuf,
    /// The API client's private key once loaded, or given in memory by [`ChefConfig::new`].
    /// Never read from or written to a file.
    #[serde(skip)]
    pub client_key: Option<ClientKey>,
    /// The signing protocol (1.3 by default; 1.0 for old servers).
    #[serde(default)]
    pub sign_version: SignVersion,
    /// Which server implementation answers (detected on the first search by default).
    #[serde(default)]
    pub flavor: ServerFlavor,
    /// Verify the server's TLS certificate (on by default; turning it off is for labs only).
    #[serde(default = "defaults::tls_verify")]
    pub tls_verify: bool,
    /// Extra PEM CA certificates to trust, e.g. a private CA.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Bound on establishing a connection (10 s by default).
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on one whole request: connect, send, receive (60 s by default).
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How many times a request that failed with a 5xx answer, a timeout or a refused
    /// connection is tried again (3 by default).
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// The wait before the first retry; each later wait doubles, up to `max_retry_backoff`
    /// (200 ms by default). Each wait is shortened by up to a fifth at random (the core's
    /// [`Backoff`](vesemir_core::backoff::Backoff) jitter).
    #[serde(default = "defaults::retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest wait between two attempts (5 s by default).
    #[serde(default = "defaults::max_retry_backoff", with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// The node attribute that gives a host's address (dotted path), `ipaddress` by default;
    /// `fqdn` or e.g. `cloud.local_ipv4` are common alternatives.
    #[serde(default = "defaults::address_attribute")]
    pub address_attribute: String,
    /// Extra node attributes (dotted paths) copied into [`vesemir_core::Host::attributes`].
    #[serde(default)]
    pub extra_attributes: Vec<String>,
    /// Rows per search page on Chef Infra Server (1000 by default).
    #[serde(default = "defaults::page_size")]
    pub page_size: usize,
    /// Answer an empty search with an empty host list instead of an error.
    #[serde(default)]
    pub allow_empty: bool,
}

/// The defaults of [`ChefConfig`], written once for [`ChefConfig::new`] and for serde.
mod defaults {
    use std::time::Duration;

    pub(super) fn tls_verify() -> bool {
        true
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn retries() -> u32 {
        3
    }
    pub(super) fn retry_backoff() -> Duration {
        Duration::from_millis(200)
    }
    pub(super) fn max_retry_backoff() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn address_attribute() -> String {
        "ipaddress".to_owned()
    }
    pub(super) fn page_size() -> usize {
        1000
    }
}

impl ChefConfig {
    /// A configuration with a key already in memory and the defaults: Mixlib 1.3, server
    /// flavor detected, TLS verified, 10 s to connect, 60 s per request, 3 retries, address
    /// from `ipaddress`, pages of 1000 rows, an empty result is an error.
    pub fn new(server_url: impl Into<String>, client_name: impl Into<String>, client_key: ClientKey) -> Self {
        Self {
            server_url: server_url.into(),
            client_name: client_name.into(),
            client_key_path: PathBuf::new(),
            client_key: Some(client_key),
            sign_version: SignVersion::default(),
            flavor: ServerFlavor::default(),
            tls_verify: defaults::tls_verify(),
            ca_bundle: None,
            connect_timeout: defaults::connect_timeout(),
            request_timeout: defaults::request_timeout(),
            retries: defaults::retries(),
            retry_backoff: defaults::retry_backoff(),
            max_retry_backoff: defaults::max_retry_backoff(),
            address_attribute: defaults::address_attribute(),
            extra_attributes: Vec::new(),
            page_size: defaults::page_size(),
            allow_empty: false,
        }
    }

    /// Reads the key file into [`client_key`](Self::client_key) unless a key is there already,
    /// so that a missing or bad key is reported before anything runs.
    pub fn load_key(mut self) -> Result<Self, ConfigError> {
        if self.client_key.is_none() {
            self.client_key = Some(ClientKey::from_file(&self.client_key_path)?);
        }
        Ok(self)
    }

    /// The key, read from its file if it is not in memory yet.
    pub(crate) fn key(&self) -> Result<ClientKey, ConfigError> {
        match &self.client_key {
            Some(key) => Ok(key.clone()),
            None => Ok(ClientKey::from_file(&self.client_key_path)?),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_toml_with_safe_defaults_and_loads_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("client.pem");
        std::fs::write(&key_path, include_str!("../tests/fixtures/test-client.pem")).expect("write");
        std::fs::set_permissions(&key_path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let key_path = key_path.display();
        let text = format!(
            "server_url = \"https://chef.example.com/organizations/acme\"\nclient_name = \"vesemir\"\n\
             client_key_path = \"{key_path}\"\nrequest_timeout = \"30s\"\nsign_version = \"1.0\"\n"
        );
        let config: ChefConfig = toml::from_str(&text).expect("valid settings");
        assert!(config.tls_verify);
        assert_eq!(config.flavor, ServerFlavor::Auto);
        assert!(config.client_key.is_none(), "the key is read when asked for");
        let config = config.load_key().expect("the key loads");
        assert!(config.client_key.is_some());
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.sign_version, SignVersion::V1_0);
        assert!(!format!("{config:?}").contains("PRIVATE KEY"));
        // Every default is the one `new` gives.
        let built = ChefConfig::new(
            "https://chef.example.com/organizations/acme",
            "vesemir",
            config.key().expect("key"),
        );
        assert_eq!(
            (config.connect_timeout, config.retries, config.retry_backoff, config.max_retry_backoff),
            (built.connect_timeout, built.retries, built.retry_backoff, built.max_retry_backoff)
        );
        assert_eq!(
            (&config.address_attribute, config.page_size),
            (&built.address_attribute, built.page_size)
        );
        let bad: Result<ChefConfig, _> = toml::from_str(
            "server_url = \"x\"\nclient_name = \"v\"\nclient_key_path = \"k\"\nverify = false\n",
        );
        assert!(bad.expect_err("unknown field").to_string().contains("verify"));
        let missing = ChefConfig { client_key: None, client_key_path: "/nonexistent.pem".into(), ..built };
        assert!(missing.load_key().expect_err("no such file").to_string().contains("/nonexistent.pem"));
    }
}
