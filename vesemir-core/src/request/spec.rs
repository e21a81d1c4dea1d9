//! The deployment request as written: TOML in files, JSON over HTTP. Every field is plain data
//! here; [`RequestSpec::validate`] turns it into a [`DeploymentRequest`](super::DeploymentRequest)
//! and reports every problem at once, by field path. Unknown fields are errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::amount::Amount;
use super::errors::{FieldError, ValidationErrors};

/// A duration as humantime reads it (`"90s"`, `"1m 30s"`, `"1.5s"`, `"0"`): one or more numbers
/// each followed by a unit. Every string humantime accepts matches; units and the bound (7 days)
/// are checked by the validation.
pub const DURATION: &str = "^(0|\\s*([0-9]+(\\.[0-9]*)?\\s*[A-Za-z\\u00b5]+\\s*)+)$";

/// A deployment request as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "application": "shop-web",
    "environment": "production",
    "team": "payments",
    "version": "2026.11.21-1",
    "targets": { "tags": ["web"] },
    "load_balancer": { "backend": "be_web", "instances": [{ "address": "10.0.0.2", "port": 9001 }] },
    "strategy": { "concurrency": "25%" },
    "playbook": "web",
    "variables": { "channel": "stable" }
})))]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The application to deploy.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::identifier))]
    pub application: String,
    /// The environment to deploy to.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::identifier))]
    pub environment: String,
    /// The team that owns the application.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::identifier))]
    pub team: String,
    /// The changeset's identity: the version being deployed.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::version))]
    pub version: String,
    /// Who asked (a person or a pipeline). Front ends may fill it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_printable))]
    pub requested_by: Option<String>,
    /// Which hosts to deploy to.
    pub targets: TargetsSpec,
    /// The load balancer in front of them.
    pub load_balancer: LoadBalancerSpec,
    /// How many hosts at a time, and when to stop.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// A playbook configured by the operator, instead of an inline changeset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_identifier))]
    pub playbook: Option<String>,
    /// The changeset, inline (where the front end allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changeset: Option<ChangesetSpec>,
    /// Values for the `{variables}` of the changeset's templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(example = json!({"channel": "stable"})))]
    pub variables: BTreeMap<String, String>,
}

/// Which hosts to deploy to: a search (tags, roles, recipes, a raw query) or a list of hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TargetsSpec {
    /// Tags every host must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Roles every host must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Recipes every host must run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipes: Vec<String>,
    /// The Chef environment to search in; defaults to the request's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_identifier))]
    pub chef_environment: Option<String>,
    /// A raw inventory query (where the front end allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A static list of hosts, instead of a search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostSpec>>,
}

/// A host listed by hand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The host's name, as events and reports show it (checked as a host name).
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::identifier))]
    pub name: String,
    /// Its IP address or DNS name: SSH connects there (checked, never passed to a shell raw).
    #[cfg_attr(feature = "openapi", schema(max_length = 253, example = "10.0.0.11"))]
    pub address: String,
}

/// The load balancer in front of the hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// The HAProxy backend the hosts are servers of.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::haproxy))]
    pub backend: String,
    /// The HAProxy instances, listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<EndpointSpec>,
    /// The HAProxy instances, found through the inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discover: Option<DiscoverSpec>,
    /// How a host's server is named, e.g. `"{host}"` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `"address"` to find each host's server by its address instead of by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<ServerMatch>))]
    pub match_servers_by: Option<String>,
    /// How long to wait for a drained server's sessions to end, e.g. `"60s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub drain_timeout: Option<String>,
    /// `"fail"` (the default) or `"force"` when sessions outlast the drain timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<OnDrainTimeout>))]
    pub on_drain_timeout: Option<String>,
    /// What to do with target servers found out of rotation before the deployment (maintenance,
    /// drain, down, weight 0, or a different state on different boxes): `"refuse"` (the
    /// default), `"skip"` or `"include"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<NotInRotation>))]
    pub servers_not_in_rotation: Option<String>,
    /// Weights to pass through before 100%, each with a hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<RampSpec>,
}

/// One load balancer instance's runtime API: `{ address, port }` or `{ socket }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// IP address or DNS name of a TCP runtime API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The TCP port of that runtime API (with `address`; not with `socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535, example = 9001))]
    pub port: Option<u16>,
    /// Path of a unix socket runtime API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// How to find the load balancer instances through the inventory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DiscoverSpec {
    /// Tags the load balancer hosts carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Roles the load balancer hosts have (all of them, like `tags`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Recipes in the load balancer hosts' run lists (all of them, like `tags`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipes: Vec<String>,
    /// The Chef environment to search in (any, by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_identifier))]
    pub chef_environment: Option<String>,
    /// The TCP port of their runtime API.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535, example = 9001))]
    pub port: u16,
}

/// One step of the weight ramp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RampSpec {
    /// `"10%"`, or a number of percent.
    pub weight: Amount,
    /// How long to stay at this weight, e.g. `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub hold: Option<String>,
}

/// How many hosts at a time, and when to stop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// Hosts out of rotation at once: a count or a percentage of the fleet. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Amount>,
    /// Failures tolerated over the whole fleet before no new host starts. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<Amount>,
    /// A pause after each batch, e.g. `"10s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub pause_between_batches: Option<String>,
    /// Deploy a first small batch, then wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// What the front end does when the deployment stops on `max_failures`: `"stop"` (the
    /// default: leave it for a person) or `"rollback"` (deploy the previous version, from the
    /// history, to the hosts it changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<OnFailureWord>))]
    pub on_failure: Option<String>,
    /// `"sliding"` (a host that ends frees its slot at once) or `"batches"` (strict batches).
    /// Default: `"batches"` when `pause_between_batches` is set, else `"sliding"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<WindowWord>))]
    pub window: Option<String>,
    /// Try the hosts that ended unreachable (SSH could not connect) once more at the end of the
    /// rollout, within the same concurrency, backend budget and `max_failures`. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_unreachable: Option<bool>,
    /// What another server instance does when it takes the deployment over (the one running it
    /// died or lost the database; servers sharing PostgreSQL only): `"resume"` (the default:
    /// put back the hosts that were in flight if healthy, then deploy the rest) or `"restore"`
    /// (put back the hosts that were in flight if healthy, start no other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<OnTakeoverWord>))]
    pub on_takeover: Option<String>,
}

/// The canary batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// How many hosts the canary batch has.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_u32, example = 1))]
    pub hosts: u32,
    /// How long to watch the canary before going on, e.g. `"5m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub hold: Option<String>,
    /// Wait for someone to confirm before going on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<bool>,
}

/// The changeset: steps, then a health gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangesetSpec {
    /// The steps, run in order on each host.
    pub steps: Vec<StepSpec>,
    /// How a host proves it is healthy before it goes back into rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
}

/// One step: `run` a command, or `upload` a file `to` a path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// A short name shown in progress and logs.
    pub name: String,
    /// A command template to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A local file to upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// Where to upload it on the host (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The uploaded file's mode, octal, e.g. `"0755"`. Default `"0644"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// How long the step may take, e.g. `"5m"`. Default 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub timeout: Option<String>,
    /// Try the step again after a transient failure, e.g.
    /// `retries = { count = 2, delay = "1s", exit_codes = [75] }`. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<StepRetriesSpec>,
    /// Run it while the host is still in rotation, before the drain (download, unpack, warm
    /// up). Stage steps come first in the list. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<bool>,
}

/// A step's retries, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StepRetriesSpec {
    /// Tries after the first, at most: 1 to 10.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10, example = 2))]
    pub count: u32,
    /// The wait before the first retry, doubled before each next (at most a minute), e.g.
    /// `"2s"`. Default 1 second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub delay: Option<String>,
    /// The exit codes that mean "try again", 1 to 255. Default: every non-zero exit code. A host
    /// that could not be reached is always tried again; a timeout or a signal never is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_exit_codes))]
    pub exit_codes: Option<Vec<i64>>,
}

/// The health gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// A command template that exits 0 when the host is healthy; retried until `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// How long the command may keep failing, e.g. `"60s"`. Default 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub timeout: Option<String>,
    /// The pause between attempts, e.g. `"2s"`. Default 2 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub interval: Option<String>,
    /// Also wait until every load balancer instance reports the server UP. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_up: Option<bool>,
    /// How long to wait for UP, e.g. `"30s"`. Default 30 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub up_timeout: Option<String>,
    /// An HTTP check made by Vesemir itself (after the command, if both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthSpec>,
}

/// `health.http`: a GET from the orchestrator, polled until it passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpHealthSpec {
    /// The URL template, e.g. `"http://{address}:8080/health"`.
    pub url: String,
    /// The status that passes. Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// The pause between two requests, e.g. `"20ms"`. Default 100 milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub interval: Option<String>,
    /// How long it may keep failing, e.g. `"60s"`. Default 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::optional_duration))]
    pub timeout: Option<String>,
}

/// The schemas of the request's constrained strings: each with its pattern, so the document
/// says what the validation accepts.
#[cfg(feature = "openapi")]
mod schemas {
    use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

    use crate::name::pattern;

    fn text(pattern: &str, max_length: Option<usize>, example: &str, description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some(pattern))
            .max_length(max_length)
            .description(Some(description))
            .examples([serde_json::Value::from(example)])
    }

    /// `schema`, or null (an optional field: `null` reads as left out).
    fn or_null(schema: ObjectBuilder) -> Object {
        schema.schema_type(SchemaType::from_iter([Type::String, Type::Null])).build()
    }

    fn identifier_text() -> ObjectBuilder {
        text(
            pattern::IDENTIFIER,
            Some(64),
            "shop-web",
            "1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit.",
        )
    }

    pub(super) fn identifier() -> Object {
        identifier_text().build()
    }

    pub(super) fn optional_identifier() -> Object {
        or_null(identifier_text())
    }

    fn haproxy_text() -> ObjectBuilder {
        text(
            pattern::HAPROXY,
            Some(64),
            "be_web",
            "1 to 64 letters, digits, '-', '_', '.' or ':' (HAProxy's legal characters).",
        )
    }

    pub(super) fn haproxy() -> Object {
        haproxy_text().build()
    }

    fn version_text() -> ObjectBuilder {
        text(
            pattern::VERSION,
            Some(128),
            "2026.11.21-1",
            "1 to 128 letters, digits, '-', '_', '.', ':', '+' or '~', starting with a letter or digit.",
        )
    }

    pub(super) fn version() -> Object {
        version_text().build()
    }

    fn printable_text() -> ObjectBuilder {
        text(
            pattern::PRINTABLE,
            Some(255),
            "ci-pipeline",
            "1 to 255 bytes of text, no control characters, no white space around it.",
        )
    }

    pub(super) fn optional_printable() -> Object {
        or_null(printable_text())
    }

    fn duration_text() -> ObjectBuilder {
        text(super::DURATION, None, "30s", "A duration: `90s`, `5m`, `1h 30m`, `500ms`; at most 7 days.")
    }

    pub(super) fn optional_duration() -> Object {
        or_null(duration_text())
    }

    /// A list of 1 or more exit codes that mean failure (1 to 255), or null.
    pub(super) fn optional_exit_codes() -> utoipa::openapi::schema::Array {
        use utoipa::openapi::schema::ArrayBuilder;
        let code = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .minimum(Some(1))
            .maximum(Some(255));
        ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .items(code)
            .min_items(Some(1))
            .description(Some(
                "Exit codes that mean \"try again\" (1 to 255); left out: every non-zero code.",
            ))
            .examples([serde_json::json!([75])])
            .build()
    }
}

/// The words of `load_balancer.match_servers_by`, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by validate")]
enum ServerMatch {
    /// By the `server_name` template (`{host}` by default).
    Name,
    /// By the host's address.
    Address,
}

/// The words of `strategy.on_failure`, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by validate")]
enum OnFailureWord {
    /// Leave the failure for a person (the default).
    Stop,
    /// Deploy the previous version to the hosts the deployment changed.
    Rollback,
}

/// The words of `strategy.on_takeover`, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by validate")]
pub(crate) enum OnTakeoverWord {
    /// Put back the hosts in flight (health gate first), then deploy the rest (the default).
    Resume,
    /// Put back the hosts in flight (health gate first) and start no other host.
    Restore,
}

/// The words of `strategy.window`, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by validate")]
enum WindowWord {
    /// A host that ends frees its slot at once.
    Sliding,
    /// Strict batches.
    Batches,
}

/// The words of `load_balancer.on_drain_timeout`, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by validate")]
enum OnDrainTimeout {
    /// The host fails (the default).
    Fail,
    /// Its remaining sessions are shut down.
    Force,
}

/// The words of `load_balancer.servers_not_in_rotation`, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the field is read as text and checked by validate")]
enum NotInRotation {
    /// Nothing is deployed (the default).
    Refuse,
    /// Those servers are left alone.
    Skip,
    /// They are deployed to and left as found.
    Include,
}

impl RequestSpec {
    /// Parses TOML. A syntax error or an unknown field is reported with its path.
    pub fn from_toml(text: &str) -> Result<Self, ValidationErrors> {
        parse_toml(text)
    }

    /// Parses JSON. A syntax error or an unknown field is reported with its path.
    pub fn from_json(text: &str) -> Result<Self, ValidationErrors> {
        parse_json(text)
    }
}

impl ChangesetSpec {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, ValidationErrors> {
        parse_toml(text)
    }
}

/// A document read as far as its types allow: the value, with each field of the wrong type (or
/// missing, or unknown) replaced by a stand-in, and the problems those fields had.
#[derive(Debug, Clone)]
pub struct Lenient<T> {
    /// The value, stand-ins included: validate it only to find the document's other problems.
    pub value: T,
    /// The type problems, in the order they were found.
    pub problems: Vec<FieldError>,
    /// Where stand-ins were put: later problems at or under these paths are echoes of a stand-in.
    pub stand_ins: Vec<String>,
}

impl<T> Lenient<T> {
    /// The value, or every type problem.
    pub fn into_result(self) -> Result<T, ValidationErrors> {
        match ValidationErrors::from_errors(self.problems) {
            Some(errors) => Err(errors),
            None => Ok(self.value),
        }
    }

    /// Whether `field` is, or lies under, a stand-in (so a problem there repeats a type problem).
    pub fn covers(&self, field: &str) -> bool {
        self.stand_ins.iter().any(|s| lies_under(field, s))
    }
}

/// Parses any of the spec types from TOML, reporting every type problem by field path.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ValidationErrors> {
    read_toml(text)?.into_result()
}

/// Parses any of the spec types from JSON, reporting every type problem by field path.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ValidationErrors> {
    read_json(text)?.into_result()
}

/// Reads TOML leniently (see [`Lenient`]); only a syntax error stops it.
pub fn read_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<Lenient<T>, ValidationErrors> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ValidationErrors::one(FieldError::new("(document)", format!("is not valid TOML: {}", e.message())))
    })?;
    read(toml::Value::Table(table), |e: toml::de::Error| e.message().to_owned())
}

/// Reads JSON leniently (see [`Lenient`]); only a syntax error stops it.
pub fn read_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<Lenient<T>, ValidationErrors> {
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        ValidationErrors::one(FieldError::new("(document)", format!("is not valid JSON: {e}")))
    })?;
    whole_numbers(&mut value);
    read(value, |e: serde_json::Error| strip_position(&e.to_string()))
}

/// Writes each number with a zero fraction (`3.0`, `1e2`) as the integer it is: JSON does not
/// tell them apart, and JSON Schema counts them as integers, so a count may be written either
/// way. Other fractions stay, and are refused where a whole number is needed.
fn whole_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            // Exact: the fraction is zero and the value within i64's range (2^63 is exact in f64).
            #[allow(clippy::cast_possible_truncation)]
            if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
                *value = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// At most this many repairs: a document with more problems reports the ones found so far.
const MOST_REPAIRS: usize = 200;

/// Deserializes `tree`; on each error records it, puts a stand-in where it was (or removes an
/// unknown field) and tries again, until the value deserializes.
fn read<V, T>(
    mut tree: V,
    message: impl Fn(<V as serde::Deserializer<'static>>::Error) -> String,
) -> Result<Lenient<T>, ValidationErrors>
where
    V: Tree + serde::Deserializer<'static>,
    T: serde::de::DeserializeOwned,
{
    let mut problems: Vec<FieldError> = Vec::new();
    let mut stand_ins: Vec<String> = Vec::new();
    let mut tried: Vec<(String, usize)> = Vec::new();
    for _ in 0..MOST_REPAIRS {
        let error = match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(value) => return Ok(Lenient { value, problems, stand_ins }),
            Err(error) => error,
        };
        let mut path: Vec<Segment> = error.path().iter().filter_map(Segment::from_serde).collect();
        let at = error.path().to_string();
        let text = message(error.into_inner());
        let missing = text.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
        if let Some(field) = missing {
            path.push(Segment::Key(field.to_owned()));
        }
        let target = render(&path);
        if !stand_ins.iter().any(|s| lies_under(&target, s)) {
            problems.push(FieldError::new(document_path(&at), text.clone()));
        }
        if let Some(field) = text.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()) {
            if path.last() != Some(&Segment::Key(field.to_owned())) {
                path.push(Segment::Key(field.to_owned()));
            }
        }
        let Some((last, parents)) = path.split_last() else { break };
        let Some(parent) = tree.find_mut(parents) else { break };
        if text.starts_with("unknown field") {
            parent.remove(last);
            continue;
        }
        let next = match tried.iter_mut().find(|(t, _)| *t == target) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                tried.push((target.clone(), 0));
                0
            }
        };
        match V::stand_in(next) {
            Some(value) => parent.set(last, value),
            None if missing.is_none() => parent.remove(last),
            None => break,
        }
        stand_ins.push(target);
    }
    Err(ValidationErrors::from_errors(problems)
        .unwrap_or_else(|| ValidationErrors::one(FieldError::new("(document)", "cannot be read"))))
}

/// Whether `field` is `path` or lies under it (`path.x`, `path[0]`).
fn lies_under(field: &str, path: &str) -> bool {
    field.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Segment {
    fn from_serde(segment: &serde_path_to_error::Segment) -> Option<Self> {
        match segment {
            serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            _ => None,
        }
    }
}

/// A path as the validation writes it: `load_balancer.instances[0].port`.
fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) if out.is_empty() => out.push_str(key),
            Segment::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A parsed document (TOML or JSON) that [`read`] can repair.
trait Tree: Clone + Sized {
    /// The `n`th value to try in place of a bad one: an empty string, zero, false, an empty
    /// list, an empty table; `None` when all were tried.
    fn stand_in(n: usize) -> Option<Self>;
    fn find_mut(&mut self, path: &[Segment]) -> Option<&mut Self>;
    fn set(&mut self, at: &Segment, value: Self);
    fn remove(&mut self, at: &Segment);
}

impl Tree for toml::Value {
    fn stand_in(n: usize) -> Option<Self> {
        Some(match n {
            0 => toml::Value::String(String::new()),
            1 => toml::Value::Integer(0),
            2 => toml::Value::Boolean(false),
            3 => toml::Value::Array(Vec::new()),
            4 => toml::Value::Table(toml::Table::new()),
            _ => return None,
        })
    }

    fn find_mut(&mut self, path: &[Segment]) -> Option<&mut Self> {
        path.iter().try_fold(self, |value, segment| match (value, segment) {
            (toml::Value::Table(t), Segment::Key(k)) => t.get_mut(k),
            (toml::Value::Array(a), Segment::Index(i)) => a.get_mut(*i),
            _ => None,
        })
    }

    fn set(&mut self, at: &Segment, value: Self) {
        match (self, at) {
            (toml::Value::Table(t), Segment::Key(k)) => {
                t.insert(k.clone(), value);
            }
            (toml::Value::Array(a), Segment::Index(i)) if *i < a.len() => a[*i] = value,
            _ => {}
        }
    }

    fn remove(&mut self, at: &Segment) {
        if let (toml::Value::Table(t), Segment::Key(k)) = (self, at) {
            t.remove(k);
        }
    }
}

impl Tree for serde_json::Value {
    fn stand_in(n: usize) -> Option<Self> {
        Some(match n {
            0 => serde_json::Value::String(String::new()),
            1 => serde_json::Value::from(0),
            2 => serde_json::Value::Bool(false),
            3 => serde_json::Value::Array(Vec::new()),
            4 => serde_json::Value::Object(serde_json::Map::new()),
            _ => return None,
        })
    }

    fn find_mut(&mut self, path: &[Segment]) -> Option<&mut Self> {
        path.iter().try_fold(self, |value, segment| match (value, segment) {
            (serde_json::Value::Object(o), Segment::Key(k)) => o.get_mut(k),
            (serde_json::Value::Array(a), Segment::Index(i)) => a.get_mut(*i),
            _ => None,
        })
    }

    fn set(&mut self, at: &Segment, value: Self) {
        match (self, at) {
            (serde_json::Value::Object(o), Segment::Key(k)) => {
                o.insert(k.clone(), value);
            }
            (serde_json::Value::Array(a), Segment::Index(i)) if *i < a.len() => a[*i] = value,
            _ => {}
        }
    }

    fn remove(&mut self, at: &Segment) {
        if let (serde_json::Value::Object(o), Segment::Key(k)) = (self, at) {
            o.remove(k);
        }
    }
}

fn document_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        "(document)".to_owned()
    } else {
        path.to_owned()
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
