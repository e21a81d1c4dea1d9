//! The deployment request as written: TOML in files, JSON over HTTP. Every field is plain data
//! here; [`RequestSpec::validate`] turns it into a [`DeploymentRequest`](super::DeploymentRequest)
//! and reports every problem at once, by field path. Unknown fields are errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::amount::Amount;
use super::errors::{FieldError, ValidationErrors};

/// A deployment request as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The application to deploy.
    pub application: String,
    /// The environment to deploy to.
    pub environment: String,
    /// The team that owns the application.
    pub team: String,
    /// The changeset's identity: the version being deployed.
    pub version: String,
    /// Who asked (a person or a pipeline). Front ends may fill it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub playbook: Option<String>,
    /// The changeset, inline (where the front end allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changeset: Option<ChangesetSpec>,
    /// Values for the `{variables}` of the changeset's templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

/// Which hosts to deploy to: a search (tags, roles, recipes, a raw query) or a list of hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Its name.
    pub name: String,
    /// Its IP address or DNS name.
    pub address: String,
}

/// The load balancer in front of the hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// The HAProxy backend the hosts are servers of.
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
    pub match_servers_by: Option<String>,
    /// How long to wait for a drained server's sessions to end, e.g. `"60s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    /// `"fail"` (the default) or `"force"` when sessions outlast the drain timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_drain_timeout: Option<String>,
    /// Weights to pass through before 100%, each with a hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<RampSpec>,
}

/// One load balancer instance's runtime API: `{ address, port }` or `{ socket }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// IP address or DNS name of a TCP runtime API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its TCP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path of a unix socket runtime API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// How to find the load balancer instances through the inventory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverSpec {
    /// Tags the load balancer hosts carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Roles they have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Recipes they run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipes: Vec<String>,
    /// The Chef environment to search in (any, by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chef_environment: Option<String>,
    /// The TCP port of their runtime API.
    pub port: u16,
}

/// One step of the weight ramp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSpec {
    /// `"10%"`, or a number of percent.
    pub weight: Amount,
    /// How long to stay at this weight, e.g. `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// How many hosts at a time, and when to stop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    pub pause_between_batches: Option<String>,
    /// Deploy a first small batch, then wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
}

/// The canary batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// How many hosts the canary batch has.
    pub hosts: u32,
    /// How long to watch the canary before going on, e.g. `"5m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// Wait for someone to confirm before going on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<bool>,
}

/// The changeset: steps, then a health gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    pub timeout: Option<String>,
}

/// The health gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// A command template that exits 0 when the host is healthy; retried until `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// How long the command may keep failing, e.g. `"60s"`. Default 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The pause between attempts, e.g. `"2s"`. Default 2 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Also wait until every load balancer instance reports the server UP. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_up: Option<bool>,
    /// How long to wait for UP, e.g. `"30s"`. Default 30 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_timeout: Option<String>,
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

/// Parses any of the spec types from TOML, keeping the field path of the first error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ValidationErrors> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        ValidationErrors::one(FieldError::new("(document)", format!("is not valid TOML: {}", e.message())))
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_owned();
        ValidationErrors::one(FieldError::new(document_path(&path), message))
    })
}

/// Parses any of the spec types from JSON, keeping the field path of the first error.
fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ValidationErrors> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("is not valid JSON: {inner}")
        } else {
            strip_position(&inner.to_string())
        };
        ValidationErrors::one(FieldError::new(document_path(&path), message))
    })
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
