//! The server's configuration, read from TOML: where to listen, the database, tokens, the
//! playbooks requests may pick, and limits.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! database = "/var/lib/vesemir/vesemir.db"
//!
//! [[tokens]]                 # sha256 = printf %s "$TOKEN" | sha256sum
//! name = "payments-ci"       # recorded as requested_by
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! team = "payments"
//!
//! [[tokens]]
//! name = "platform-oncall"
//! sha256 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
//! admin = true
//!
//! [applications]             # owners: only this team (or an admin) deploys them
//! shop = "payments"
//!
//! [playbooks.web]            # requests pick a playbook and pass its variables
//! steps = [{ name = "install", run = "sudo /usr/local/bin/install-release {application} {version}" }]
//! health = { command = "curl -fsS http://localhost:8080/health", timeout = "60s" }
//!
//! [limits]
//! max_body_bytes = 65536
//! max_concurrent_deployments = 16
//! max_queued_deployments = 1000
//! request_timeout = "30s"     # not applied to event streams
//! deployment_timeout = "4h"
//! call_timeout = "30s"
//! shutdown_grace = "60s"
//!
//! [log]
//! json = true
//! level = "info"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vesemir_core::name::PlaybookName;
use vesemir_core::request::spec::ChangesetSpec;
use vesemir_core::request::{FieldError, Playbooks, ValidationErrors};

use crate::auth::{Principal, Scope, TokenHash, Tokens};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen, e.g. `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The SQLite database file (created if missing).
    pub database: PathBuf,
    /// Bearer tokens, stored as SHA-256 hashes.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Which team owns which application. When an application is listed here, only its team
    /// (or an admin) may deploy it.
    #[serde(default)]
    pub applications: BTreeMap<String, String>,
    /// Changesets requests may pick by name.
    #[serde(default)]
    pub playbooks: BTreeMap<String, ChangesetSpec>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// One bearer token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: recorded as `requested_by` on every deployment it starts.
    pub name: String,
    /// SHA-256 of the token, hex (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// The team it deploys for.
    #[serde(default)]
    pub team: Option<String>,
    /// Whether it may act for every team.
    #[serde(default)]
    pub admin: bool,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("sha256", &"(hidden)")
            .field("team", &self.team)
            .field("admin", &self.admin)
            .finish()
    }
}

/// Limits on requests and deployments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Deployments running at once; more wait in the queue as `queued`.
    pub max_concurrent_deployments: usize,
    /// Deployments waiting at most; more are refused with 429.
    pub max_queued_deployments: usize,
    /// Bound on one API request (not on event streams).
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    /// Bound on one deployment's run: past it, the deployment is aborted.
    #[serde(with = "humantime_serde_compat")]
    pub deployment_timeout: Duration,
    /// Bound on one port call inside a deployment.
    #[serde(with = "humantime_serde_compat")]
    pub call_timeout: Duration,
    /// On shutdown, deployments in flight are cancelled (hosts in flight finish, no new host
    /// starts) and awaited this long; any still running are `interrupted` at the next start.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_concurrent_deployments: 16,
            max_queued_deployments: 1000,
            request_timeout: Duration::from_secs(30),
            deployment_timeout: Duration::from_secs(4 * 3600),
            call_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(60),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One JSON object per line (for a central log platform) instead of text.
    pub json: bool,
    /// The most detailed level: `error`, `warn`, `info` (default), `debug`, `trace`.
    pub level: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Durations as `"30s"`, `"5m"`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not a duration: write e.g. \"30s\" or \"5m\""))
        })
    }
}

impl ServerConfig {
    /// A configuration with defaults, for a database file (tests, embedding).
    pub fn new(database: PathBuf) -> Self {
        Self {
            listen: default_listen(),
            database,
            tokens: Vec::new(),
            applications: BTreeMap::new(),
            playbooks: BTreeMap::new(),
            limits: Limits::default(),
            log: LogConfig::default(),
        }
    }

    /// Parses TOML, naming the field of the first problem.
    pub fn from_toml(text: &str) -> Result<Self, ValidationErrors> {
        vesemir_core::request::spec::parse_toml(text)
    }

    /// The configured tokens (hashes checked by [`ServerConfig::validate`]; a malformed hash, or
    /// a token with neither team nor admin, matches nothing).
    pub fn tokens(&self) -> Tokens {
        Tokens::new(self.tokens.iter().filter_map(|t| {
            let hash = TokenHash::from_hex(&t.sha256)?;
            let scope = match (&t.team, t.admin) {
                (_, true) => Scope::Admin,
                (Some(team), false) => Scope::Team(team.clone()),
                (None, false) => return None,
            };
            Some((hash, Principal { name: t.name.clone(), scope }))
        }))
    }

    /// Validates every playbook into the core's [`Playbooks`], and the tokens.
    pub fn validate(&self) -> Result<Playbooks, ConfigError> {
        let mut problems = Vec::new();
        let mut playbooks = Playbooks::new();
        for (name, spec) in &self.playbooks {
            let field = format!("playbooks.{name}");
            let parsed = PlaybookName::new(name);
            let changeset = spec.validate();
            match (parsed, changeset) {
                (Ok(name), Ok(changeset)) => {
                    playbooks.insert(name, changeset);
                }
                (Err(e), _) => problems.push(FieldError::new(field, e.to_string())),
                (_, Err(errors)) => problems.extend(errors.within(&field).errors().iter().cloned()),
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let field = format!("tokens[{i}]");
            if TokenHash::from_hex(&token.sha256).is_none() {
                problems.push(FieldError::new(
                    format!("{field}.sha256"),
                    "must be 64 hex digits: the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum)",
                ));
            }
            if token.admin == token.team.is_some() {
                problems.push(FieldError::new(
                    field.clone(),
                    "set exactly one of team = \"...\" or admin = true",
                ));
            }
            if vesemir_core::name::Requester::new(&token.name).is_err() || !names.insert(token.name.clone()) {
                problems.push(FieldError::new(format!("{field}.name"), "must be a unique printable name"));
            }
        }
        if self.limits.max_concurrent_deployments == 0 {
            problems.push(FieldError::new("limits.max_concurrent_deployments", "must be at least 1"));
        }
        if problems.is_empty() {
            Ok(playbooks)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Every problem found in a configuration, each with its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems.
    pub problems: Vec<FieldError>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server configuration has {} problem(s):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl From<ValidationErrors> for ConfigError {
    fn from(errors: ValidationErrors) -> Self {
        Self { problems: errors.errors().to_vec() }
    }
}
