//! The operator's catalog: what each team may deploy, and the one place where a team's request
//! becomes the core's [`DeploymentRequest`].
//!
//! A unit is a (team, application, environment). The operator sets everything that touches the
//! fleet: how the targets are found (Chef tags and environment, or a static list), the backend
//! and how the HAProxy boxes are found, the playbooks allowed, the variables a request may set
//! (each with a pattern, some secret) and the strategy's limits. A request ([`UnitRequest`])
//! names a unit, a version, declared variables and a strategy within the limits; a field naming
//! hosts, instances, sockets, addresses, Chef environments or raw queries is refused (422),
//! naming the field and saying that the operator sets it. A unit not in the catalog is denied.
//!
//! ```toml
//! [[units]]
//! team = "payments"
//! application = "shop"
//! environment = "production"
//! playbooks = ["web"]                        # the first is the default
//! version = "^[0-9A-Za-z._-]{1,64}$"         # the default pattern
//! targets = { tags = ["shop"], chef_environment = "prod" }   # or hosts = [{ name, address }]
//! load_balancer = { backend = "be_shop", discover = { tags = ["haproxy"], port = 9999 } }
//! strategy = { max_concurrency = "25%", concurrency = 1, canary = true, ramp = false }
//! [units.variables.channel]
//! pattern = "^(stable|beta)$"
//! default = "stable"
//! [units.variables.db_password]
//! pattern = "^[!-~]{8,128}$"
//! secret = true                              # never stored, logged or shown: `***`
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vesemir_core::request::spec::{
    read_json, CanarySpec, LoadBalancerSpec, RampSpec, RequestSpec, StrategySpec, TargetsSpec,
};
use vesemir_core::request::{
    Amount, DeploymentRequest, FieldError, InlineChangesets, Playbooks, RawQueries, RequestPolicy,
    ValidationErrors, BUILTIN_VARIABLES,
};

use crate::auth::Principal;

/// What a secret variable's value is replaced by wherever it would be shown or stored.
pub const MASK: &str = "***";

/// The pattern a version must match when the unit sets none.
pub const DEFAULT_VERSION_PATTERN: &str = "^[0-9A-Za-z._+-]{1,64}$";

/// One deployable unit, as the operator configures it (`[[units]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// The team that deploys it.
    pub team: String,
    /// The application.
    pub application: String,
    /// The environment.
    pub environment: String,
    /// How the hosts are found: Chef tags, roles, recipes and environment, or a static list
    /// (`hosts`). Raw queries are refused.
    pub targets: TargetsSpec,
    /// The backend, and the HAProxy instances (listed or discovered), drain and ramp settings.
    pub load_balancer: LoadBalancerSpec,
    /// The playbooks a request may pick; the first is used when the request names none.
    pub playbooks: Vec<String>,
    /// The pattern (a regular expression) every requested version must match.
    #[serde(default = "default_version_pattern")]
    pub version: String,
    /// The variables a request may set, by name.
    #[serde(default)]
    pub variables: BTreeMap<String, VariableConfig>,
    /// Limits on the request's strategy.
    #[serde(default)]
    pub strategy: StrategyLimits,
    /// CI hooks that deploy this unit when their signed delivery names a version
    /// ([`crate::hooks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::hooks::HookConfig>,
    /// The unit a version that succeeded here on every host is deployed to next (same team):
    /// `ENVIRONMENT` or `APPLICATION/ENVIRONMENT` ([`crate::promotion`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_to: Option<String>,
    /// How long to wait after the success before promoting.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub promote_hold: Option<std::time::Duration>,
    /// Whether the promotion waits for a person of the team to confirm it (`vesemir promote
    /// confirm`, the API, the web page) instead of starting by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_confirm: bool,
    /// How long a promotion waits for that confirmation before it expires (default 7 days, the
    /// most).
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub promote_confirm_within: Option<std::time::Duration>,
    /// Outgoing webhooks told when its deployments start, wait, pause and end
    /// ([`crate::notify`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::NotifyConfig>,
    /// A package repository whose newer versions of a package are deployed to it
    /// ([`crate::source`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::source::SourceConfig>,
}

fn default_version_pattern() -> String {
    DEFAULT_VERSION_PATTERN.to_owned()
}

/// A variable a request may set.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VariableConfig {
    /// A regular expression the whole value must match (anchor it with `^...$`).
    pub pattern: String,
    /// The value when the request sets none; without one, a playbook that uses the variable
    /// needs the request to set it.
    #[serde(default)]
    pub default: Option<String>,
    /// Never stored, logged, echoed in events or shown by the API: `***` instead.
    #[serde(default)]
    pub secret: bool,
}

impl std::fmt::Debug for VariableConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let default = match (&self.default, self.secret) {
            (Some(_), true) => Some(MASK),
            (default, false) => default.as_deref(),
            (None, true) => None,
        };
        f.debug_struct("VariableConfig")
            .field("pattern", &self.pattern)
            .field("default", &default)
            .field("secret", &self.secret)
            .finish()
    }
}

/// The limits a unit puts on a request's strategy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyLimits {
    /// The most hosts out of rotation at once a request may ask for: a count or a percentage.
    /// A request gives its concurrency in the same form.
    pub max_concurrency: Amount,
    /// The concurrency when the request gives none.
    pub concurrency: Amount,
    /// Whether a request may ask for a canary batch.
    pub canary: bool,
    /// Whether a request may set its own weight ramp (else the unit's `load_balancer.ramp`).
    pub ramp: bool,
}

impl Default for StrategyLimits {
    fn default() -> Self {
        Self { max_concurrency: Amount::Count(1), concurrency: Amount::Count(1), canary: false, ramp: false }
    }
}

/// A deployment request to the server: a unit of the operator's catalog, a version, the
/// variables the unit declares and a strategy within its limits. Hosts, load balancers and
/// changesets are set by the operator and cannot be named here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "team": "payments", "application": "shop", "environment": "production", "version": "2.0.0",
    "variables": { "channel": "stable" }, "strategy": { "concurrency": 1 }
}))]
pub struct UnitRequest {
    /// The team deploying: one the token acts for.
    pub team: String,
    /// The application, as the catalog names it.
    pub application: String,
    /// The environment, as the catalog names it.
    pub environment: String,
    /// The version to deploy; must match the unit's version pattern.
    pub version: String,
    /// One of the unit's playbooks; the unit's first when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    /// Values of the variables the unit declares, each matching its pattern.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// How many hosts at a time, and when to stop, within the unit's limits.
    #[serde(default, skip_serializing_if = "UnitStrategy::is_empty")]
    pub strategy: UnitStrategy,
    /// Set by the server from the token: leave it out (a different value is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// The strategy a request may choose, within its unit's limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitStrategy {
    /// Hosts out of rotation at once: a count (`2`) or a percentage (`"25%"`), in the form of the
    /// unit's `max_concurrency` and at most it. Default: the unit's `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Amount>,
    /// Failures tolerated before no new host starts: a count or a percentage. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<Amount>,
    /// A pause after each batch, e.g. `"10s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_between_batches: Option<String>,
    /// A first small batch, then a hold or a confirmation (where the unit allows canaries):
    /// `{ hosts, hold, confirm }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// Weights to pass through before 100%, each with a hold (where the unit allows it):
    /// `[{ weight = "10%", hold = "30s" }]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<RampSpec>,
    /// When it stops on `max_failures`: `"stop"` (the default: leave it for a person) or
    /// `"rollback"` (deploy the previous version, from the history, to the hosts it changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OnFailureWord>)]
    pub on_failure: Option<String>,
    /// `"sliding"` (a host that ends frees its slot at once) or `"batches"` (strict batches).
    /// Default: `"batches"` when `pause_between_batches` is set, else `"sliding"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<WindowWord>)]
    pub window: Option<String>,
    /// Try the hosts that ended unreachable once more at the end of the rollout, within the same
    /// limits. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_unreachable: Option<bool>,
    /// What another server instance does when it takes the deployment over (servers sharing
    /// PostgreSQL, the one running it died or lost the database): `"resume"` (the default: put
    /// back the hosts in flight if healthy, then deploy the rest) or `"restore"` (put back the
    /// hosts in flight if healthy, start no other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OnTakeoverWord>)]
    pub on_takeover: Option<String>,
}

/// The words of `strategy.on_takeover`, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by the core")]
enum OnTakeoverWord {
    /// Put back the hosts in flight (health gate first), then deploy the rest (the default).
    Resume,
    /// Put back the hosts in flight (health gate first) and start no other host.
    Restore,
}

/// The words of `strategy.on_failure`, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by the core")]
enum OnFailureWord {
    /// Leave the failure for a person (the default).
    Stop,
    /// Deploy the previous version to the hosts the deployment changed.
    Rollback,
}

/// The words of `strategy.window`, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by the core")]
enum WindowWord {
    /// A host that ends frees its slot at once.
    Sliding,
    /// Strict batches.
    Batches,
}

impl UnitStrategy {
    /// Whether it asks for nothing (every field left to the unit).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The fields of the full request format that the operator sets on the server, with what each
/// means: a request naming one gets 422.
pub const OPERATOR_FIELDS: [(&str, &str); 13] = [
    ("targets", "the hosts"),
    ("load_balancer", "the load balancer"),
    ("changeset", "the changeset"),
    ("hosts", "the hosts"),
    ("tags", "the hosts"),
    ("roles", "the hosts"),
    ("recipes", "the hosts"),
    ("query", "the hosts"),
    ("chef_environment", "the Chef environment"),
    ("instances", "the load balancer instances"),
    ("discover", "the load balancer instances"),
    ("socket", "the load balancer instances"),
    ("backend", "the backend"),
];

/// Why a request was not turned into a deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// The body is not JSON, or a field has the wrong type or is unknown (400).
    Malformed(ValidationErrors),
    /// The token may not deploy for the request's team (403).
    Team(FieldError),
    /// The unit is not in the catalog (403): the same answer whether another team has it or
    /// nobody does.
    NotInCatalog(FieldError),
    /// Fields the operator sets, or values outside the unit's limits (422), every problem at
    /// once.
    Invalid(ValidationErrors),
}

/// A request turned into a deployment.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// What the core runs (secret variables with their real values).
    pub request: DeploymentRequest,
    /// The full request as stored and shown: secret variables are [`MASK`].
    pub stored: RequestSpec,
    /// The values of the secret variables, to be masked wherever they might show up (output
    /// lines, errors).
    pub secrets: Vec<String>,
}

impl Admitted {
    /// The record the store keeps of this admitted request (secret variables as [`MASK`]),
    /// asked by `requested_by`, with its idempotency key and the hash of the body it came from.
    pub fn to_record(
        &self,
        requested_by: &str,
        idempotency_key: Option<String>,
        body_sha256: String,
    ) -> Result<crate::store::NewDeployment, serde_json::Error> {
        let request = &self.request;
        Ok(crate::store::NewDeployment {
            application: request.application.to_string(),
            environment: request.environment.to_string(),
            team: request.team.to_string(),
            version: request.version.to_string(),
            requested_by: requested_by.to_owned(),
            playbook: request.playbook.as_ref().map(ToString::to_string),
            query: crate::api::query_of(&request.targets),
            request: serde_json::to_string(&self.stored)?,
            idempotency_key,
            body_sha256,
            created_ms: crate::clock::now_ms(),
        })
    }
}

/// A validated unit.
#[derive(Debug, Clone)]
struct Unit {
    config: UnitConfig,
    version: regex::Regex,
    variables: BTreeMap<String, (regex::Regex, VariableConfig)>,
}

/// The catalog, validated: [`Catalog::admit`] turns requests into deployments.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    units: Vec<Unit>,
}

impl Catalog {
    /// Validates every unit against the operator's `playbooks`, reporting every problem at
    /// once under `units[i]...`: names, duplicates, playbooks that do not exist, patterns that
    /// do not compile, defaults outside their pattern, limits, and each unit's request as the
    /// core would validate it (targets, load balancer, variables its playbooks use).
    pub fn from_config(units: &[UnitConfig], playbooks: &Playbooks) -> Result<Self, Vec<FieldError>> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        let mut valid = Vec::new();
        for (i, config) in units.iter().enumerate() {
            let at = format!("units[{i}]");
            let key = (config.team.clone(), config.application.clone(), config.environment.clone());
            if !seen.insert(key) {
                problems.push(FieldError::new(
                    at.clone(),
                    format!(
                        "repeats the unit {}/{}/{}: each (team, application, environment) once",
                        config.team, config.application, config.environment
                    ),
                ));
            }
            if let Some(unit) = check_unit(&at, config, playbooks, &mut problems) {
                valid.push(unit);
            }
        }
        if problems.is_empty() {
            Ok(Self { units: valid })
        } else {
            Err(problems)
        }
    }

    /// How many units it holds.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether it holds none (every request is denied).
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Turns a request body into a deployment for `principal`: the body is read as a
    /// [`UnitRequest`], the unit looked up, the request checked against the unit's limits and
    /// the full request built from the unit and validated by the core.
    pub fn admit(
        &self,
        body: &str,
        principal: &Principal,
        playbooks: &Playbooks,
    ) -> Result<Admitted, Denied> {
        let request = read_body(body)?;
        if !principal.may_deploy_for(&request.team) {
            return Err(Denied::Team(FieldError::new(
                "team",
                format!("token {} does not deploy for team {:?}", principal.name, request.team),
            )));
        }
        let Some(unit) = self.units.iter().find(|u| {
            u.config.team == request.team
                && u.config.application == request.application
                && u.config.environment == request.environment
        }) else {
            return Err(Denied::NotInCatalog(FieldError::new(
                "application",
                format!(
                    "team {} has no application {:?} in environment {:?} in the server's catalog: ask the operators to add it",
                    request.team, request.application, request.environment
                ),
            )));
        };
        unit.admit(request, principal, playbooks)
    }
}

impl Catalog {
    /// Whether `version` matches the version pattern of `team`'s unit (`application`,
    /// `environment`); `Err` carries the pattern it does not match (or says the unit is gone).
    pub fn version_matches(
        &self,
        team: &str,
        application: &str,
        environment: &str,
        version: &str,
    ) -> Result<(), String> {
        let unit = self.units.iter().find(|u| {
            u.config.team == team
                && u.config.application == application
                && u.config.environment == environment
        });
        match unit {
            Some(unit) if unit.version.is_match(version) => Ok(()),
            Some(unit) => Err(unit.config.version.clone()),
            None => Err("(the unit is not in the catalog)".to_owned()),
        }
    }
}

/// A follow-up's variable edits, checked against its unit.
#[derive(Debug, Clone)]
pub struct FollowUpVariables {
    /// The names of the unit's secret variables (stored as [`MASK`]).
    pub secret: BTreeSet<String>,
}

impl Catalog {
    /// Checks the variables a follow-up (retry) of a deployment of `team`'s `application` in
    /// `environment` changes against the unit's declarations and patterns, as a request's would
    /// be: a unit no longer in the catalog, an undeclared variable or a value outside its
    /// pattern is refused, every problem at once. Answers the unit's secret variables.
    pub fn follow_up_variables(
        &self,
        team: &str,
        application: &str,
        environment: &str,
        edits: &BTreeMap<String, String>,
    ) -> Result<FollowUpVariables, ValidationErrors> {
        let Some(unit) = self.units.iter().find(|u| {
            u.config.team == team
                && u.config.application == application
                && u.config.environment == environment
        }) else {
            return Err(ValidationErrors::one(FieldError::new(
                "application",
                format!(
                    "team {team} has no application {application:?} in environment {environment:?} in the server's catalog any more: ask the operators to add it"
                ),
            )));
        };
        let mut problems = Vec::new();
        for (name, value) in edits {
            let field = format!("variables.{name}");
            match unit.variables.get(name) {
                None => problems.push(FieldError::new(
                    field,
                    format!("is not a variable of this unit: it declares {}", unit.declared()),
                )),
                Some((pattern, config)) if !pattern.is_match(value) => problems.push(FieldError::new(
                    field,
                    format!(
                        "{}does not match this unit's pattern {}",
                        if config.secret { "(secret, not shown) " } else { "" },
                        config.pattern
                    ),
                )),
                Some(_) => {}
            }
        }
        if let Some(errors) = ValidationErrors::from_errors(problems) {
            return Err(errors);
        }
        let secret = unit
            .variables
            .iter()
            .filter(|(_, (_, config))| config.secret)
            .map(|(name, _)| name.clone())
            .collect();
        Ok(FollowUpVariables { secret })
    }
}

/// Reads a request body: operator fields first (422 naming each), then the typed form (400).
fn read_body(body: &str) -> Result<UnitRequest, Denied> {
    let mut value: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        Denied::Malformed(ValidationErrors::one(FieldError::new(
            "(document)",
            format!("is not valid JSON: {e}"),
        )))
    })?;
    let mut problems = Vec::new();
    if let Some(object) = value.as_object_mut() {
        for (field, what) in OPERATOR_FIELDS {
            let Some(given) = object.remove(field) else { continue };
            let named: Vec<String> = match &given {
                serde_json::Value::Object(inner) if !inner.is_empty() => {
                    inner.keys().map(|k| format!("{field}.{k}")).collect()
                }
                _ => vec![field.to_owned()],
            };
            for name in named {
                problems.push(FieldError::new(
                    name,
                    format!(
                        "cannot be set by a request: {what} of each unit are set by the operator in the server's catalog; a request names team, application, environment, version, playbook, variables and strategy"
                    ),
                ));
            }
        }
        // Strategy fields the operator sets are named the same way.
        if let Some(serde_json::Value::Object(strategy)) = object.get_mut("strategy") {
            for field in ["hosts", "targets"] {
                if strategy.remove(field).is_some() {
                    problems.push(FieldError::new(
                        format!("strategy.{field}"),
                        "cannot be set by a request: the operator sets the hosts in the server's catalog",
                    ));
                }
            }
        }
    }
    // serde reads a struct from an array too: the fields that are objects must be objects.
    let strategy = value.get("strategy");
    let mut objects: Vec<(String, Option<&serde_json::Value>)> = vec![
        ("strategy".to_owned(), strategy),
        ("strategy.canary".to_owned(), strategy.and_then(|s| s.get("canary"))),
    ];
    let ramp = strategy.and_then(|s| s.get("ramp")).and_then(serde_json::Value::as_array);
    for (i, step) in ramp.into_iter().flatten().enumerate() {
        objects.push((format!("strategy.ramp[{i}]"), Some(step)));
    }
    if let Some((field, _)) =
        objects.into_iter().find(|(_, given)| given.is_some_and(serde_json::Value::is_array))
    {
        return Err(Denied::Malformed(ValidationErrors::one(FieldError::new(field, "must be an object"))));
    }
    let text = value.to_string();
    let read = read_json::<UnitRequest>(&text).map_err(Denied::Malformed)?;
    if !problems.is_empty() {
        problems.extend(read.problems);
        return Err(Denied::Invalid(
            ValidationErrors::from_errors(problems)
                .unwrap_or_else(|| ValidationErrors::one(FieldError::new("(document)", "is invalid"))),
        ));
    }
    read.into_result().map_err(Denied::Malformed)
}

impl Unit {
    fn admit(
        &self,
        request: UnitRequest,
        principal: &Principal,
        playbooks: &Playbooks,
    ) -> Result<Admitted, Denied> {
        let mut problems = Vec::new();
        if let Some(asked) = &request.requested_by {
            if asked != &principal.name {
                problems.push(FieldError::new(
                    "requested_by",
                    format!("is set by the server from your token ({}): leave it out", principal.name),
                ));
            }
        }
        if !self.version.is_match(&request.version) {
            problems.push(FieldError::new(
                "version",
                format!("does not match this unit's pattern {}", self.config.version),
            ));
        }
        let playbook = match &request.playbook {
            None => self.config.playbooks.first().cloned().unwrap_or_default(),
            Some(asked) if self.config.playbooks.contains(asked) => asked.clone(),
            Some(asked) => {
                problems.push(FieldError::new(
                    "playbook",
                    format!(
                        "{asked:?} is not a playbook of this unit: it allows {}",
                        self.config.playbooks.join(", ")
                    ),
                ));
                String::new()
            }
        };
        let mut variables = BTreeMap::new();
        let mut secrets = Vec::new();
        for (name, value) in &request.variables {
            let field = format!("variables.{name}");
            match self.variables.get(name) {
                None => problems.push(FieldError::new(
                    field,
                    format!("is not a variable of this unit: it declares {}", self.declared()),
                )),
                Some((pattern, config)) if !pattern.is_match(value) => problems.push(FieldError::new(
                    field,
                    format!(
                        "{}does not match this unit's pattern {}",
                        if config.secret { "(secret, not shown) " } else { "" },
                        config.pattern
                    ),
                )),
                Some(_) => {
                    variables.insert(name.clone(), value.clone());
                }
            }
        }
        for (name, (_, config)) in &self.variables {
            if let (false, Some(default)) = (request.variables.contains_key(name), &config.default) {
                variables.insert(name.clone(), default.clone());
            }
            if let (true, Some(value)) = (config.secret, variables.get(name)) {
                secrets.push(value.clone());
            }
        }
        let strategy = self.strategy(&request.strategy, &mut problems);
        let mut load_balancer = self.config.load_balancer.clone();
        if !request.strategy.ramp.is_empty() {
            load_balancer.ramp = request.strategy.ramp.clone();
        }
        let spec = RequestSpec {
            application: self.config.application.clone(),
            environment: self.config.environment.clone(),
            team: self.config.team.clone(),
            version: request.version.clone(),
            requested_by: Some(principal.name.clone()),
            targets: self.config.targets.clone(),
            load_balancer,
            strategy,
            playbook: Some(playbook),
            changeset: None,
            variables,
        };
        let validated = spec.validate(&policy(playbooks));
        if let Err(errors) = &validated {
            for error in errors.errors() {
                if problems.iter().any(|p| p.field == error.field) {
                    continue;
                }
                let secret = error
                    .field
                    .strip_prefix("variables.")
                    .and_then(|name| self.variables.get(name))
                    .is_some_and(|(_, config)| config.secret);
                let message =
                    if secret { "is invalid (secret, not shown)".to_owned() } else { error.message.clone() };
                problems.push(FieldError::new(error.field.clone(), message));
            }
        }
        if let Some(errors) = ValidationErrors::from_errors(problems) {
            return Err(Denied::Invalid(errors));
        }
        let request = validated.map_err(Denied::Invalid)?;
        let mut stored = spec;
        for (name, value) in &mut stored.variables {
            if self.variables.get(name).is_some_and(|(_, config)| config.secret) {
                *value = MASK.to_owned();
            }
        }
        secrets.retain(|s| !s.is_empty());
        Ok(Admitted { request, stored, secrets })
    }

    /// The request's strategy within the unit's limits, each problem recorded.
    fn strategy(&self, asked: &UnitStrategy, problems: &mut Vec<FieldError>) -> StrategySpec {
        let limits = &self.config.strategy;
        let concurrency = asked.concurrency.unwrap_or(limits.concurrency);
        match (concurrency, limits.max_concurrency) {
            (Amount::Count(n), Amount::Count(max)) if n > max => problems.push(FieldError::new(
                "strategy.concurrency",
                format!("{n} is above this unit's cap of {max} hosts at a time"),
            )),
            (Amount::Percent(p), Amount::Percent(max)) if p > max => problems.push(FieldError::new(
                "strategy.concurrency",
                format!("{p}% is above this unit's cap of {max}% of its hosts at a time"),
            )),
            (Amount::Count(_), Amount::Percent(max)) => problems.push(FieldError::new(
                "strategy.concurrency",
                format!("must be a percentage for this unit, at most {max}%"),
            )),
            (Amount::Percent(_), Amount::Count(max)) => problems.push(FieldError::new(
                "strategy.concurrency",
                format!("must be a count for this unit, at most {max}"),
            )),
            _ => {}
        }
        if asked.canary.is_some() && !limits.canary {
            problems.push(FieldError::new("strategy.canary", "is not allowed for this unit by the operator"));
        }
        if !asked.ramp.is_empty() && !limits.ramp {
            problems.push(FieldError::new(
                "strategy.ramp",
                "is not allowed for this unit by the operator: its ramp is the catalog's",
            ));
        }
        StrategySpec {
            concurrency: Some(concurrency),
            max_failures: asked.max_failures,
            pause_between_batches: asked.pause_between_batches.clone(),
            canary: asked.canary.clone(),
            on_failure: asked.on_failure.clone(),
            window: asked.window.clone(),
            retry_unreachable: asked.retry_unreachable,
            on_takeover: asked.on_takeover.clone(),
        }
    }

    fn declared(&self) -> String {
        if self.variables.is_empty() {
            "none".to_owned()
        } else {
            self.variables.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// The policy every unit's request is validated under: the operator's playbooks only, no
/// inline changesets, no raw queries.
fn policy(playbooks: &Playbooks) -> RequestPolicy<'_> {
    RequestPolicy {
        playbooks,
        inline_changesets: InlineChangesets::Refused,
        raw_queries: RawQueries::Refused,
    }
}

/// A pattern, compiled, or a problem under `field`.
fn compile(field: &str, pattern: &str, problems: &mut Vec<FieldError>) -> Option<regex::Regex> {
    match regex::Regex::new(pattern) {
        Ok(regex) => Some(regex),
        Err(e) => {
            problems.push(FieldError::new(field, format!("is not a regular expression: {e}")));
            None
        }
    }
}

/// Checks one unit; `None` after recording why it is unusable.
fn check_unit(
    at: &str,
    config: &UnitConfig,
    playbooks: &Playbooks,
    problems: &mut Vec<FieldError>,
) -> Option<Unit> {
    let before = problems.len();
    let version = compile(&format!("{at}.version"), &config.version, problems);
    let mut variables = BTreeMap::new();
    for (name, variable) in &config.variables {
        let field = format!("{at}.variables.{name}");
        if BUILTIN_VARIABLES.contains(&name.as_str()) {
            problems.push(FieldError::new(field.clone(), "is built in: the server sets it"));
        }
        if let Some(pattern) = compile(&format!("{field}.pattern"), &variable.pattern, problems) {
            if let Some(default) = &variable.default {
                if !pattern.is_match(default) {
                    problems.push(FieldError::new(format!("{field}.default"), "does not match its pattern"));
                }
            }
            variables.insert(name.clone(), (pattern, variable.clone()));
        }
    }
    if config.playbooks.is_empty() {
        problems.push(FieldError::new(
            format!("{at}.playbooks"),
            "is empty: list the playbooks this unit may run",
        ));
    }
    for (j, name) in config.playbooks.iter().enumerate() {
        if !playbooks.keys().any(|p| p.as_str() == name) {
            problems.push(FieldError::new(
                format!("{at}.playbooks[{j}]"),
                format!("{name:?} is not a playbook of this server ([playbooks.{name}])"),
            ));
        }
    }
    let limits = &config.strategy;
    match limits.max_concurrency {
        Amount::Count(0) | Amount::Percent(0) => problems
            .push(FieldError::new(format!("{at}.strategy.max_concurrency"), "must be at least 1 (or 1%)")),
        _ => {}
    }
    let default_ok = match (limits.concurrency, limits.max_concurrency) {
        (Amount::Count(n), Amount::Count(max)) => n <= max,
        (Amount::Percent(p), Amount::Percent(max)) => p <= max,
        _ => false,
    };
    if !default_ok {
        problems.push(FieldError::new(
            format!("{at}.strategy.concurrency"),
            format!("must be in the form of max_concurrency ({}) and at most it", limits.max_concurrency),
        ));
    }
    // The unit's request as the core sees it, once per playbook, with stand-in values; with no
    // usable playbook, once with a stand-in changeset, so its targets and load balancer are
    // still checked.
    let mut seen = BTreeSet::new();
    let usable: Vec<Option<&String>> = config
        .playbooks
        .iter()
        .filter(|p| playbooks.keys().any(|k| k.as_str() == p.as_str()))
        .map(Some)
        .collect();
    let stand_in_changeset = vesemir_core::request::spec::ChangesetSpec {
        steps: vec![vesemir_core::request::spec::StepSpec {
            name: "stand-in".to_owned(),
            run: Some("true".to_owned()),
            ..Default::default()
        }],
        health: None,
    };
    let no_playbooks = Playbooks::new();
    let candidates = if usable.is_empty() { vec![None] } else { usable };
    for playbook in candidates {
        let policy = match playbook {
            Some(_) => policy(playbooks),
            None => RequestPolicy {
                playbooks: &no_playbooks,
                inline_changesets: InlineChangesets::Allowed,
                raw_queries: RawQueries::Refused,
            },
        };
        let spec = RequestSpec {
            application: config.application.clone(),
            environment: config.environment.clone(),
            team: config.team.clone(),
            version: "0".to_owned(),
            requested_by: Some("operator".to_owned()),
            targets: config.targets.clone(),
            load_balancer: config.load_balancer.clone(),
            strategy: StrategySpec { concurrency: Some(limits.concurrency), ..StrategySpec::default() },
            playbook: playbook.cloned(),
            changeset: playbook.is_none().then(|| stand_in_changeset.clone()),
            variables: config.variables.keys().map(|k| (k.clone(), "x".to_owned())).collect(),
        };
        if let Err(errors) = spec.validate(&policy) {
            for error in errors.errors() {
                let field = match error.field.as_str() {
                    "playbook" => format!("{at}.playbooks"),
                    "strategy.concurrency" => format!("{at}.strategy.concurrency"),
                    f if f.starts_with("variables.") || f == "version" || f.starts_with("changeset") => {
                        continue
                    }
                    f => format!("{at}.{f}"),
                };
                let message = match error.field.as_str() {
                    "targets.query" => {
                        "raw queries are not allowed in the catalog: use tags, roles, recipes".to_owned()
                    }
                    _ => error.message.clone(),
                };
                if seen.insert((field.clone(), message.clone())) {
                    problems.push(FieldError::new(field, message));
                }
            }
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Unit { config: config.clone(), version: version?, variables })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use vesemir_core::request::spec::ChangesetSpec;
    use vesemir_core::request::validate_playbooks;

    fn playbooks() -> Playbooks {
        let web: ChangesetSpec = toml::from_str(
            "steps = [{ name = \"install\", run = \"install {application} {version} {channel} {password}\" }]",
        )
        .expect("changeset");
        validate_playbooks([(&"web".to_owned(), &web)]).expect("valid")
    }

    fn unit() -> UnitConfig {
        toml::from_str(
            r#"
team = "payments"
application = "shop"
environment = "production"
playbooks = ["web"]
targets = { hosts = [{ name = "web-01", address = "127.0.0.1" }] }
load_balancer = { backend = "be_shop", instances = [{ socket = "/run/haproxy.sock" }] }
strategy = { max_concurrency = 2 }
variables.channel = { pattern = "^(stable|beta)$", default = "stable" }
variables.password = { pattern = "^[a-z0-9]{4,}$", secret = true }
"#,
        )
        .expect("unit")
    }

    fn admit(body: serde_json::Value) -> Result<Admitted, Denied> {
        let catalog = Catalog::from_config(&[unit()], &playbooks()).expect("valid");
        catalog.admit(&body.to_string(), &Principal::team_token("ci", ["payments"]), &playbooks())
    }

    fn fields(denied: Denied) -> Vec<String> {
        match denied {
            Denied::Invalid(e) | Denied::Malformed(e) => e.errors().iter().map(|p| p.field.clone()).collect(),
            Denied::Team(p) | Denied::NotInCatalog(p) => vec![p.field],
        }
    }

    #[test]
    fn a_request_becomes_the_units_deployment_with_secrets_masked_in_the_stored_form() {
        let admitted = admit(serde_json::json!({
            "team": "payments", "application": "shop", "environment": "production",
            "version": "1.2.3", "variables": { "password": "hunter22" }
        }))
        .expect("admitted");
        assert_eq!(admitted.request.load_balancer.backend.as_str(), "be_shop");
        assert_eq!(admitted.request.requested_by.as_str(), "ci");
        assert_eq!(admitted.stored.variables["password"], MASK);
        assert_eq!(admitted.stored.variables["channel"], "stable");
        assert_eq!(admitted.secrets, ["hunter22"]);
        assert!(!serde_json::to_string(&admitted.stored).expect("json").contains("hunter22"));
    }

    #[test]
    fn operator_fields_and_values_outside_the_limits_are_named() {
        let denied = admit(serde_json::json!({
            "team": "payments", "application": "shop", "environment": "production", "version": "1",
            "targets": { "hosts": [], "chef_environment": "x" },
            "load_balancer": { "instances": [] }, "query": "name:*"
        }))
        .expect_err("refused");
        assert_eq!(
            fields(denied),
            ["targets.chef_environment", "targets.hosts", "load_balancer.instances", "query"]
        );
        let denied = admit(serde_json::json!({
            "team": "payments", "application": "shop", "environment": "production", "version": "1 2",
            "playbook": "db", "variables": { "channel": "nightly", "password": "NO!", "other": "x" },
            "strategy": { "concurrency": 3, "canary": { "hosts": 1 } }
        }))
        .expect_err("refused");
        let named = fields(denied.clone());
        for field in [
            "version",
            "playbook",
            "variables.channel",
            "variables.password",
            "variables.other",
            "strategy.concurrency",
            "strategy.canary",
        ] {
            assert!(named.iter().any(|f| f == field), "{field} missing from {named:?}");
        }
        assert!(!format!("{denied:?}").contains("NO!"), "a secret is echoed: {denied:?}");
    }

    #[test]
    fn other_teams_and_units_not_in_the_catalog_are_denied() {
        let catalog = Catalog::from_config(&[unit()], &playbooks()).expect("valid");
        let body = serde_json::json!({ "team": "payments", "application": "shop", "environment": "production", "version": "1" });
        let other = Principal::team_token("search-ci", ["search"]);
        assert!(matches!(catalog.admit(&body.to_string(), &other, &playbooks()), Err(Denied::Team(_))));
        let body = serde_json::json!({ "team": "payments", "application": "cart", "environment": "production", "version": "1" });
        let own = Principal::team_token("ci", ["payments"]);
        assert!(matches!(catalog.admit(&body.to_string(), &own, &playbooks()), Err(Denied::NotInCatalog(_))));
    }

    #[test]
    fn the_catalog_reports_every_problem_of_every_unit() {
        let mut bad = unit();
        bad.playbooks = vec!["db".into()];
        bad.version = "([".into();
        bad.targets.query = Some("name:*".into());
        bad.strategy.max_concurrency = Amount::Count(0);
        let mut raw = unit();
        raw.targets.hosts = None;
        raw.targets.query = Some("name:*".into());
        raw.variables.remove("password");
        let problems = Catalog::from_config(&[unit(), unit(), bad, raw], &playbooks()).expect_err("invalid");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for field in [
            "units[1]",
            "units[2].version",
            "units[2].playbooks[0]",
            "units[2].strategy.max_concurrency",
            "units[3].targets.query",
        ] {
            assert!(fields.contains(&field), "{field} missing from {fields:?}");
        }
        assert!(
            problems.iter().any(|p| p.field.starts_with("units[3]") && p.message.contains("{password}")),
            "an undeclared variable a playbook uses: {problems:?}"
        );
    }
}
