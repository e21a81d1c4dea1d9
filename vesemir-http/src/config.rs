//! The server's configuration, read from TOML: where to listen, the database, tokens, the
//! playbooks, the operator's catalog of deployable units ([`crate::catalog`]), and limits.
//!
//! ```toml
//! listen = "127.0.0.1:8080"  # plain HTTP on loopback; elsewhere [tls] (or allow_plain_http)
//! metrics_listen = "10.0.0.5:9464" # optional: /metrics without a token, for a scraper
//! database = "/var/lib/vesemir/vesemir.db"   # or "postgres://vesemir@db.internal/vesemir"
//!
//! [[tokens]]                 # sha256 = printf %s "$TOKEN" | sha256sum
//! name = "payments-ci"       # recorded as requested_by
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! teams = ["payments"]       # `team = "payments"` for one
//! roles = ["deploy", "read"] # the default; "read" alone only reads
//!
//! [[tokens]]
//! name = "platform-oncall"
//! sha256 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
//! admin = true               # or roles = ["admin"]
//!
//! [playbooks.web]            # units allow playbooks; requests pass declared variables
//! steps = [{ name = "install", run = "sudo /usr/local/bin/install-release {application} {version}" }]
//! health = { command = "curl -fsS http://localhost:8080/health", timeout = "60s" }
//!
//! [[units]]                  # the catalog: see `crate::catalog`
//! team = "payments"
//! application = "shop"
//! environment = "production"
//! playbooks = ["web"]
//! targets = { tags = ["shop"], chef_environment = "prod" }
//! load_balancer = { backend = "be_shop", discover = { tags = ["haproxy"], port = 9999 } }
//! strategy = { max_concurrency = "25%", concurrency = "10%" }
//!
//! [limits]
//! max_body_bytes = 65536
//! max_concurrent_deployments = 16
//! max_queued_deployments = 1000
//! request_timeout = "30s"     # not applied to event streams
//! deployment_timeout = "4h"
//! call_timeout = "30s"
//! shutdown_grace = "60s"
//! max_queued_per_team = 100         # deployments one team may have waiting (then 429)
//! max_event_streams_per_token = 20  # open GET .../events per token (then 429)
//! event_retention = "90days"        # events of deployments ended longer ago are pruned; "0s" keeps them
//!
//! [log]
//! json = true
//! level = "info"
//!
//! [tls]                       # HTTPS on listen: see `crate::tls`
//! cert = "/etc/vesemir/tls/cert.pem"
//! key = "/etc/vesemir/tls/key.pem"
//!
//! [cluster]                   # several instances on one PostgreSQL database
//! instance = "deploy-vm-1"    # default: the host name (the pid and start time are added)
//! lease = "10s"               # a deployment's lease, renewed every third of it
//!
//! [driver]
//! checks_while_out = false    # true: faster UP gate, only for backends without persistence
//!
//! [ldap]                      # the web page's directory sign-in: see `crate::web::config`
//! url = "ldaps://ldap.internal"
//! user_base = "ou=people,dc=example,dc=com"
//! group_base = "ou=groups,dc=example,dc=com"
//! groups = [{ group = "payments-developers", teams = ["payments"], roles = ["deploy", "read"] }]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vesemir_core::request::spec::ChangesetSpec;
use vesemir_core::request::{
    check_count, check_duration, validate_playbooks, FieldError, Playbooks, ValidationErrors,
    MAX_CALL_DURATION, MAX_REQUEST_DURATION,
};

use crate::auth::{Principal, PrincipalSource, Role, TokenHash, Tokens};
use crate::catalog::{Catalog, UnitConfig};
use crate::store::{InstanceId, PostgresUrl, StoreOptions};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen, e.g. `127.0.0.1:8080`. Plain HTTP only on a loopback address, unless
    /// `[tls]` or `allow_plain_http` is set.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `[tls]`: serve HTTPS on `listen` with this certificate and key ([`crate::tls`]).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Serve plain HTTP on a `listen` that is not a loopback address (only behind a
    /// TLS-terminating proxy: tokens travel in every request).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// The SQLite database file (created if missing), or a `postgres://` URL (several
    /// instances may share it).
    pub database: Database,
    /// A separate address serving only `GET /metrics`, without a token (for a Prometheus
    /// scraper on a private network); on `listen`, `/metrics` needs an admin token.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer tokens, stored as SHA-256 hashes.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// The operator's catalog: what each team may deploy, where, and how ([`crate::catalog`]).
    /// A request for anything else is denied.
    #[serde(default)]
    pub units: Vec<UnitConfig>,
    /// Changesets the catalog's units allow, by name.
    #[serde(default)]
    pub playbooks: BTreeMap<String, ChangesetSpec>,
    /// Bounds on bodies, queue, concurrency and time (`[limits]`).
    #[serde(default)]
    pub limits: Limits,
    /// Log format and level (`[log]`; `RUST_LOG` overrides the level).
    #[serde(default)]
    pub log: LogConfig,
    /// This instance's name and lease time (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Directory sign-in for the web page (`[ldap]`, [`crate::web::config`]); no web page
    /// without it.
    #[serde(default)]
    pub ldap: Option<crate::web::LdapConfig>,
    /// How deployments drive the load balancers (`[driver]`).
    #[serde(default)]
    pub driver: DriverOptions,
    /// Who may create which VMs (`[vms]`, issue 19); no VM is created without it.
    #[serde(default)]
    pub vms: Option<VmRules>,
}

/// `[vms]`: the operator's catalog for VMs. What the VMs are built with (flavor sizes,
/// hypervisors, addresses, DNS, Chef) is the front end's `[provision]` section; this says who
/// may ask. Owners must exist in the directory (`[ldap]` is required with it).
///
/// ```toml
/// [vms]
/// max_per_owner = 2
///
/// [[vms.allow]]
/// team = "web"
/// flavors = ["small", "medium"]
/// max_per_owner = 1        # optional: tighter for this team's requests
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmRules {
    /// How many VMs one owner may hold at most (creating, ready, destroying or interrupted).
    pub max_per_owner: u32,
    /// Which teams may create which flavors. A team not listed may create none.
    #[serde(default)]
    pub allow: Vec<VmAllow>,
}

/// One `[[vms.allow]]` entry: a team and the flavors it may create.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmAllow {
    /// The team (of the token or the signed-in user's groups).
    pub team: String,
    /// The flavors (names of the `[provision]` flavors) it may create.
    pub flavors: Vec<String>,
    /// A tighter per-owner limit for this team's requests.
    #[serde(default)]
    pub max_per_owner: Option<u32>,
}

/// `[driver]`: the operator's choices for every deployment this server runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriverOptions {
    /// Keep HAProxy's health checks running while a host is out (drained, not in maintenance,
    /// during its changeset; marked DOWN after it unless the checks saw the restart), so the
    /// UP gate of playbooks with `load_balancer_up` passes sooner
    /// ([`vesemir_core::DriverConfig::checks_while_out`]). **Only** when no backend of the
    /// catalog uses persistence (cookies, stick tables, `use-server`): a drained server still
    /// takes requests pinned to it, also while it restarts. Default `false`.
    pub checks_while_out: bool,
}

/// Where deployments are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, for one server.
    Sqlite(PathBuf),
    /// A PostgreSQL database, for one or several servers.
    Postgres(PostgresUrl),
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::Sqlite(path)
    }
}

impl From<&std::path::Path> for Database {
    fn from(path: &std::path::Path) -> Self {
        Database::Sqlite(path.to_owned())
    }
}

impl<'de> Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return PostgresUrl::parse(&text).map(Database::Postgres).map_err(serde::de::Error::custom);
        }
        if text.contains("://") {
            return Err(serde::de::Error::custom(
                "must be a SQLite file path or a postgres:// URL (no other database is supported)",
            ));
        }
        if text.is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        Ok(Database::Sqlite(PathBuf::from(text)))
    }
}

/// How this instance shares the database with others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This instance's name in the database (`lease_owner`, logs); the host name by default.
    /// The process id and start time are added, so a restarted server is a new instance.
    pub instance: Option<String>,
    /// How long a deployment's lease lasts unless renewed (every third of it). When an
    /// instance dies, another ends its deployments this long after its last renewal.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { instance: None, lease: crate::store::DEFAULT_LEASE }
    }
}

/// The shortest lease: a renewal every third of it must fit in a database round trip.
const MIN_LEASE: Duration = Duration::from_secs(1);
/// The longest lease: a dead instance's deployments wait this long at most.
const MAX_LEASE: Duration = Duration::from_secs(600);

impl ClusterConfig {
    /// The store's identity and lease time.
    pub fn store_options(&self) -> StoreOptions {
        let instance = match &self.instance {
            Some(name) => InstanceId::for_process(name),
            None => InstanceId::this_host(),
        };
        StoreOptions { instance, lease: self.lease }
    }

    fn check(&self, problems: &mut Vec<FieldError>) {
        problems.extend(check_duration("cluster.lease", self.lease, MAX_LEASE).err());
        if self.lease < MIN_LEASE {
            problems.push(FieldError::new("cluster.lease", "must be at least 1s"));
        }
        if let Some(name) = &self.instance {
            if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '/') {
                problems.push(FieldError::new(
                    "cluster.instance",
                    "must be 1 to 128 printable characters without '/'",
                ));
            }
        }
    }
}

/// One bearer token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: recorded as `requested_by` on every deployment it starts.
    pub name: String,
    /// SHA-256 of the token, hex (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// The team it belongs to (one; `teams` for several).
    #[serde(default)]
    pub team: Option<String>,
    /// The teams it belongs to.
    #[serde(default)]
    pub teams: Vec<String>,
    /// What it may do for them: `deploy` and `read` by default; `read` alone only reads.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Whether it may act for every team (the `admin` role).
    #[serde(default)]
    pub admin: bool,
}

impl TokenConfig {
    /// Its teams: `team` and `teams` together.
    fn all_teams(&self) -> std::collections::BTreeSet<String> {
        self.team.iter().chain(&self.teams).cloned().collect()
    }

    /// Whether it is an admin (`admin = true` or the `admin` role).
    fn is_admin(&self) -> bool {
        self.admin || self.roles.contains(&Role::Admin)
    }

    /// The principal it authenticates, or `None` when it has neither a team nor admin.
    fn principal(&self) -> Option<Principal> {
        let teams = self.all_teams();
        let mut roles: std::collections::BTreeSet<Role> = self.roles.iter().copied().collect();
        if self.admin {
            roles.insert(Role::Admin);
        }
        if roles.is_empty() {
            roles = [Role::Deploy, Role::Read].into();
        }
        if teams.is_empty() && !roles.contains(&Role::Admin) {
            return None;
        }
        Some(Principal { name: self.name.clone(), source: PrincipalSource::Token, teams, roles })
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("sha256", &"(hidden)")
            .field("team", &self.team)
            .field("teams", &self.teams)
            .field("roles", &self.roles)
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
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Bound on one deployment's run: past it, the deployment is aborted.
    #[serde(with = "humantime_serde")]
    pub deployment_timeout: Duration,
    /// Bound on one port call inside a deployment.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// On shutdown, deployments in flight are cancelled (hosts in flight finish, no new host
    /// starts) and awaited this long; any still running are then aborted and recorded
    /// `interrupted` with the servers they may have left out ([`crate::shutdown`]).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Deployments one team may have waiting in the queue at once; more are refused with 429
    /// naming this quota ([`crate::limits`]).
    pub max_queued_per_team: usize,
    /// Event streams (`GET .../events`) one token may keep open at once; more are refused with
    /// 429 naming this cap.
    pub max_event_streams_per_token: usize,
    /// Events of deployments that ended longer ago than this are deleted by a periodic task;
    /// the deployment, its hosts and its summary stay, and the API says its events were pruned
    /// ([`crate::retention`]). `0s` keeps them forever.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
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
            max_queued_per_team: 100,
            max_event_streams_per_token: 20,
            event_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// The largest request body accepted at most: 64 MiB.
const MAX_BODY_BYTES: usize = 64 << 20;
/// The most deployments running at once.
const MAX_CONCURRENT_DEPLOYMENTS: usize = 1024;
/// The most deployments waiting.
const MAX_QUEUED_DEPLOYMENTS: usize = 1_000_000;
/// The most event streams one token may be allowed.
const MAX_EVENT_STREAMS: usize = 100_000;
/// The longest event retention: 100 years (past it, keep them forever with `0s`).
const MAX_EVENT_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Limits {
    /// Upper bounds, so that no limit overflows time arithmetic or memory: `request_timeout`,
    /// `call_timeout` and `shutdown_grace` at most 1h, `deployment_timeout` at most 7d (the
    /// bound of a request's durations), bodies at most 64 MiB, at most 1024 deployments running
    /// and 1,000,000 queued (also per team), 100,000 event streams per token, events kept at
    /// most 100 years.
    fn check_bounds(&self, problems: &mut Vec<FieldError>) {
        for (field, value, limit) in [
            ("limits.request_timeout", self.request_timeout, MAX_CALL_DURATION),
            ("limits.call_timeout", self.call_timeout, MAX_CALL_DURATION),
            ("limits.shutdown_grace", self.shutdown_grace, MAX_CALL_DURATION),
            ("limits.deployment_timeout", self.deployment_timeout, MAX_REQUEST_DURATION),
            ("limits.event_retention", self.event_retention, MAX_EVENT_RETENTION),
        ] {
            problems.extend(check_duration(field, value, limit).err());
        }
        for (field, value, limit) in [
            ("limits.max_body_bytes", self.max_body_bytes, MAX_BODY_BYTES),
            (
                "limits.max_concurrent_deployments",
                self.max_concurrent_deployments,
                MAX_CONCURRENT_DEPLOYMENTS,
            ),
            ("limits.max_queued_deployments", self.max_queued_deployments, MAX_QUEUED_DEPLOYMENTS),
            ("limits.max_queued_per_team", self.max_queued_per_team, MAX_QUEUED_DEPLOYMENTS),
            ("limits.max_event_streams_per_token", self.max_event_streams_per_token, MAX_EVENT_STREAMS),
        ] {
            problems.extend(check_count(field, value, 0, limit).err());
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

impl ServerConfig {
    /// Parses TOML and validates it ([`ServerConfig::validate`]), reporting every problem at
    /// once, each with its field path: values of the wrong type and unknown fields are problems
    /// like the others, not a stop at the first.
    pub fn from_toml(text: &str) -> Result<Self, ValidationErrors> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ValidationErrors::one(FieldError::new(
                "(document)",
                format!("is not valid TOML: {}", e.message()),
            ))
        })?;
        let mut problems = Vec::new();
        let config = read_fields(table, &mut problems);
        if let Some(Err(more)) = config.as_ref().map(ServerConfig::validate) {
            problems.extend_from_slice(more.errors());
        }
        match (config, ValidationErrors::from_errors(problems)) {
            (Some(config), None) => Ok(config),
            (_, Some(errors)) => Err(errors),
            // `read_fields` answers `None` only after recording why.
            (None, None) => Err(ValidationErrors::one(FieldError::new("(document)", "cannot be read"))),
        }
    }

    /// The configured tokens (hashes checked by [`ServerConfig::validate`]; a malformed hash, or
    /// a token with neither team nor admin, matches nothing).
    pub fn tokens(&self) -> Tokens {
        Tokens::new(
            self.tokens.iter().filter_map(|t| Some((TokenHash::from_hex(&t.sha256)?, t.principal()?))),
        )
    }

    /// Validates every playbook into the core's [`Playbooks`], the catalog of units against
    /// them, and the tokens: every problem at once, by field path.
    pub fn validate(&self) -> Result<Validated, ValidationErrors> {
        let playbooks = validate_playbooks(&self.playbooks);
        let mut problems = playbooks.as_ref().err().map_or_else(Vec::new, |e| e.errors().to_vec());
        // Units are checked against the playbooks that are valid; a unit naming an invalid
        // one is reported with it.
        let usable = playbooks.as_ref().ok().cloned().unwrap_or_default();
        let catalog = Catalog::from_config(&self.units, &usable);
        if let (Err(unit_problems), Ok(_)) = (&catalog, &playbooks) {
            problems.extend(unit_problems.iter().cloned());
        }
        problems.extend(crate::hooks::check(&self.units));
        problems.extend(crate::promotion::check(&self.units));
        problems.extend(crate::notify::check(&self.units));
        problems.extend(crate::source::check(&self.units));
        let mut names = std::collections::BTreeSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let field = format!("tokens[{i}]");
            if TokenHash::from_hex(&token.sha256).is_none() {
                problems.push(FieldError::new(
                    format!("{field}.sha256"),
                    "must be 64 hex digits: the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum)",
                ));
            }
            if token.is_admin() != token.all_teams().is_empty() {
                problems.push(FieldError::new(
                    field.clone(),
                    "set exactly one of teams = [\"...\"] (or team = \"...\") or admin = true",
                ));
            }
            if token.team.is_some() && !token.teams.is_empty() {
                problems.push(FieldError::new(format!("{field}.team"), "set team or teams, not both"));
            }
            if vesemir_core::name::Requester::new(&token.name).is_err() || !names.insert(token.name.clone()) {
                problems.push(FieldError::new(format!("{field}.name"), "must be a unique printable name"));
            }
        }
        if self.limits.max_concurrent_deployments == 0 {
            problems.push(FieldError::new("limits.max_concurrent_deployments", "must be at least 1"));
        }
        self.limits.check_bounds(&mut problems);
        self.cluster.check(&mut problems);
        crate::tls::check_config(self.listen, self.tls.as_ref(), self.allow_plain_http, &mut problems);
        if let Some(ldap) = &self.ldap {
            ldap.check(&mut problems);
        }
        match (ValidationErrors::from_errors(problems), playbooks, catalog) {
            (Some(errors), _, _) => Err(errors),
            (None, Ok(playbooks), Ok(catalog)) => Ok(Validated { playbooks, catalog }),
            (None, Err(errors), _) => Err(errors),
            (None, Ok(_), Err(problems)) => Err(ValidationErrors::from_errors(problems)
                .unwrap_or_else(|| ValidationErrors::one(FieldError::new("units", "is invalid")))),
        }
    }
}

/// A configuration's playbooks and catalog, validated.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The operator's playbooks.
    pub playbooks: Playbooks,
    /// The catalog of units, over those playbooks.
    pub catalog: Catalog,
}

/// Reads every field of the configuration on its own, so that a value of the wrong type in one
/// does not hide the problems of the others. Tokens and playbooks are read one by one.
fn read_fields(mut table: toml::Table, problems: &mut Vec<FieldError>) -> Option<ServerConfig> {
    let mut take = |key: &str| table.remove(key);
    let listen = take("listen").map_or(Some(default_listen()), |v| read(v, "listen", problems));
    let tls = take("tls").map_or(Some(None), |v| read(v, "tls", problems).map(Some));
    let allow_plain_http =
        take("allow_plain_http").map_or(Some(false), |v| read(v, "allow_plain_http", problems));
    let database = match take("database") {
        Some(v) => read::<Database>(v, "database", problems),
        None => {
            problems.push(FieldError::new(
                "database",
                "is missing: the SQLite database file, or a postgres:// URL",
            ));
            None
        }
    };
    let metrics_listen = match take("metrics_listen") {
        Some(v) => read::<SocketAddr>(v, "metrics_listen", problems).map(Some),
        None => Some(None),
    };
    let tokens = match take("tokens") {
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| read::<TokenConfig>(v, &format!("tokens[{i}]"), problems))
            .collect(),
        Some(other) => read::<Vec<TokenConfig>>(other, "tokens", problems),
        None => Some(Vec::new()),
    };
    if take("applications").is_some() {
        problems.push(FieldError::new(
            "applications",
            "is replaced by the catalog: declare each team's units under [[units]] (team, application, environment, targets, load_balancer, playbooks)",
        ));
    }
    let units = match take("units") {
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| read::<UnitConfig>(v, &format!("units[{i}]"), problems))
            .collect(),
        Some(other) => read::<Vec<UnitConfig>>(other, "units", problems),
        None => Some(Vec::new()),
    };
    let playbooks = match take("playbooks") {
        Some(toml::Value::Table(entries)) => entries
            .into_iter()
            .map(|(name, v)| {
                Some((name.clone(), read::<ChangesetSpec>(v, &format!("playbooks.{name}"), problems)?))
            })
            .collect(),
        Some(other) => read::<BTreeMap<String, ChangesetSpec>>(other, "playbooks", problems),
        None => Some(BTreeMap::new()),
    };
    let limits = take("limits").map_or(Some(Limits::default()), |v| read(v, "limits", problems));
    let log = take("log").map_or(Some(LogConfig::default()), |v| read(v, "log", problems));
    let cluster = take("cluster").map_or(Some(ClusterConfig::default()), |v| read(v, "cluster", problems));
    let ldap = take("ldap").map_or(Some(None), |v| read(v, "ldap", problems).map(Some));
    let driver = take("driver").map_or(Some(DriverOptions::default()), |v| read(v, "driver", problems));
    let vms = take("vms").map_or(Some(None), |v| read(v, "vms", problems).map(Some));
    for key in table.keys() {
        problems.push(FieldError::new(
            key.as_str(),
            "is not a field: expected listen, tls, allow_plain_http, metrics_listen, database, tokens, units, playbooks, limits, log, cluster, ldap, driver or vms",
        ));
    }
    Some(ServerConfig {
        listen: listen?,
        tls: tls?,
        allow_plain_http: allow_plain_http?,
        database: database?,
        metrics_listen: metrics_listen?,
        tokens: tokens?,
        units: units?,
        playbooks: playbooks?,
        limits: limits?,
        log: log?,
        cluster: cluster?,
        ldap: ldap?,
        driver: driver?,
        vms: vms?,
    })
}

/// Reads `value` as a `T`, recording each problem under `field`. In a table, a key whose value
/// is wrong is dropped and the rest read again, so every wrong key of it is reported.
fn read<T: serde::de::DeserializeOwned>(
    mut value: toml::Value,
    field: &str,
    problems: &mut Vec<FieldError>,
) -> Option<T> {
    let mut dropped: Vec<String> = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(read) => return dropped.is_empty().then_some(read),
            Err(e) => {
                let path = e.path().clone();
                let at = match path.to_string().as_str() {
                    "." | "" => field.to_owned(),
                    inner => format!("{field}.{inner}"),
                };
                let message = e.into_inner().message().trim_end().to_owned();
                // A required key dropped for its wrong value is reported already.
                let consequence = message
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.strip_suffix('`'))
                    .is_some_and(|key| dropped.contains(&format!("{at}.{key}")));
                if consequence {
                    return None;
                }
                if !drop_key(&mut value, &path) {
                    problems.push(FieldError::new(at, message));
                    return None;
                }
                problems.push(FieldError::new(at.clone(), message));
                dropped.push(at);
            }
        }
    }
}

/// Removes the table key `path` ends with, if it ends with one. False if nothing was removed.
fn drop_key(value: &mut toml::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else { return false };
    let mut at = value;
    for segment in parents {
        at = match (segment, at) {
            (Segment::Map { key }, toml::Value::Table(table)) => match table.get_mut(key) {
                Some(inner) => inner,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(items)) => match items.get_mut(*index) {
                Some(inner) => inner,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        toml::Value::Table(table) => table.remove(key).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<String> {
        let error = ServerConfig::from_toml(text).expect_err("invalid");
        error.errors().iter().map(|p| p.field.clone()).collect()
    }

    #[test]
    fn every_problem_is_reported_at_once_type_errors_included() {
        let text = r#"
listen = "nowhere"
database = "/tmp/v.db"
colour = "blue"

[[tokens]]
name = "ci"
sha256 = "not hex"
team = "payments"

[[tokens]]
name = 7
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
admin = true

[playbooks.web]
steps = []

[limits]
max_concurrent_deployments = "zero"
request_timeout = "soon"
max_body_bytes = 1024
shutdown_grace = "5s"
"#;
        let fields = fields(text);
        for expected in [
            "listen",
            "colour",
            "tokens[1].name",
            "limits.max_concurrent_deployments",
            "limits.request_timeout",
        ] {
            assert!(fields.iter().any(|f| f == expected), "{expected} missing from {fields:?}");
        }
        assert_eq!(fields.len(), 5, "{fields:?}");
    }

    #[test]
    fn semantic_problems_come_with_a_valid_shape() {
        let text = r#"
database = "/tmp/v.db"
[[tokens]]
name = "ci"
sha256 = "not hex"
team = "payments"
[playbooks.web]
steps = []
[limits]
max_concurrent_deployments = 0
"#;
        assert_eq!(
            fields(text),
            ["playbooks.web.steps", "tokens[0].sha256", "limits.max_concurrent_deployments"]
        );
    }

    #[test]
    fn limits_past_their_bounds_are_refused_naming_the_field() {
        let text = r#"
database = "/tmp/v.db"
[limits]
shutdown_grace = "10000000000000000000s"
deployment_timeout = "8d"
max_concurrent_deployments = 9223372036854775807
max_body_bytes = 9223372036854775807
"#;
        let error = ServerConfig::from_toml(text).expect_err("invalid");
        let lines: Vec<String> = error.errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "limits.shutdown_grace: 10000000000000000000s is above the limit of 1h",
                "limits.deployment_timeout: 8d is above the limit of 7d",
                "limits.max_body_bytes: 9223372036854775807 is above the limit of 67108864",
                "limits.max_concurrent_deployments: 9223372036854775807 is above the limit of 1024",
            ]
        );
    }

    #[test]
    fn durations_and_defaults() {
        let config = ServerConfig::from_toml("database = \"v.db\"\n[limits]\nrequest_timeout = \"5m\"\n")
            .expect("valid");
        assert_eq!(config.limits.request_timeout, Duration::from_secs(300));
        assert_eq!(config.limits.call_timeout, Limits::default().call_timeout);
        assert_eq!(config.listen, default_listen());
        assert_eq!(fields("listen = \"127.0.0.1:1\""), ["database"]);
        assert_eq!(config.database, Database::Sqlite(PathBuf::from("v.db")));
        assert_eq!(config.cluster.lease, crate::store::DEFAULT_LEASE);
    }

    #[test]
    fn a_postgres_url_selects_postgres_and_the_lease_is_bounded() {
        let config = ServerConfig::from_toml(
            "database = \"postgres://vesemir:pw@db/vesemir\"\n[cluster]\ninstance = \"vm-1\"\nlease = \"3s\"\n",
        )
        .expect("valid");
        assert!(matches!(config.database, Database::Postgres(_)));
        assert!(!format!("{config:?}").contains("pw@"), "the password shows: {config:?}");
        assert_eq!(config.cluster.lease, Duration::from_secs(3));
        assert!(config.cluster.store_options().instance.as_str().starts_with("vm-1/"));
        assert_eq!(fields("database = \"mysql://x/y\""), ["database"]);
        assert_eq!(
            fields("database = \"v.db\"\n[cluster]\nlease = \"10ms\"\ninstance = \"a/b\"\n"),
            ["cluster.lease", "cluster.instance"]
        );
    }
}
