//! Reads a deployment file and applies `--set` and `--concurrency` before validation.

use std::path::Path;

use vesemir_core::request::spec::{parse_toml, RequestSpec};
use vesemir_core::request::{DeploymentRequest, InlineChangesets, Playbooks, RawQueries, RequestPolicy};
use vesemir_http::catalog::UnitRequest;

use crate::exit::Failure;
use crate::overrides::apply_set;

/// Reads `path`, applies the overrides and validates it against the operator's `playbooks`,
/// reporting every problem of the file at once (type errors included).
pub fn load(
    path: &Path,
    sets: &[String],
    concurrency: Option<&str>,
    playbooks: &Playbooks,
) -> Result<DeploymentRequest, Failure> {
    let text = edited(path, sets, concurrency, Requester::FromEnvironment)?;
    let policy = RequestPolicy {
        playbooks,
        inline_changesets: InlineChangesets::Allowed,
        raw_queries: RawQueries::Allowed,
    };
    DeploymentRequest::from_toml(&text, &policy)
        .map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}

/// Who the request says asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// `requested_by` from the file, else `$VESEMIR_REQUESTED_BY` or `$USER` (local deploys).
    FromEnvironment,
    /// Left to the server, which records the token's name.
    Server,
}

/// Reads `path` and applies the overrides, without validating against playbooks (the server
/// does that).
pub fn spec(
    path: &Path,
    sets: &[String],
    concurrency: Option<&str>,
    requester: Requester,
) -> Result<RequestSpec, Failure> {
    let text = edited(path, sets, concurrency, requester)?;
    RequestSpec::from_toml(&text).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}

/// A request a local run recorded (its wire form, JSON), run again by `retry` or `rollback`:
/// `edits` first (what the follow-up changes: `version=...`, the policy for servers not in
/// rotation), then the person's `--set` and `--concurrency`; `requested_by` is whoever runs
/// this. Answers the request as written and validated.
pub fn from_recorded(
    recorded: &serde_json::Value,
    edits: &[String],
    sets: &[String],
    concurrency: Option<&str>,
    playbooks: &Playbooks,
) -> Result<(RequestSpec, DeploymentRequest), Failure> {
    let mut document: toml::Table = serde_json::from_value(recorded.clone())
        .map_err(|e| Failure::input(format!("the recorded request cannot be read: {e}")))?;
    document.remove("requested_by");
    for edit in edits {
        apply_set(&mut document, "--set", edit).map_err(Failure::input)?;
    }
    let text = edit_document(document, sets, concurrency, Requester::FromEnvironment)?;
    let policy = RequestPolicy {
        playbooks,
        inline_changesets: InlineChangesets::Allowed,
        raw_queries: RawQueries::Allowed,
    };
    let request = DeploymentRequest::from_toml(&text, &policy)
        .map_err(|e| Failure::input(format!("the recorded request, edited: {e}")))?;
    let spec =
        RequestSpec::from_toml(&text).map_err(|e| Failure::input(format!("the recorded request: {e}")))?;
    Ok((spec, request))
}

/// What `vesemir deploy --server` sends: the file (with the overrides) as a request for a unit
/// of the server's catalog. The fields the operator sets on the server (targets, load
/// balancer, changeset) are left out and named in the second value, so the same deployment
/// file serves local deploys and the server.
pub fn unit(
    path: &Path,
    sets: &[String],
    concurrency: Option<&str>,
) -> Result<(UnitRequest, Vec<String>), Failure> {
    let text = edited(path, sets, concurrency, Requester::Server)?;
    let mut document: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Failure::input(format!("{}: is not valid TOML: {}", path.display(), e.message()))
    })?;
    let mut left_out = Vec::new();
    for (field, _) in vesemir_http::catalog::OPERATOR_FIELDS {
        if document.remove(field).is_some() {
            left_out.push(field.to_owned());
        }
    }
    let text = toml::to_string(&document).map_err(|e| Failure::input(e.to_string()))?;
    let request =
        parse_toml::<UnitRequest>(&text).map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
    Ok((request, left_out))
}

/// The file's TOML with the overrides and `requested_by` applied.
fn edited(
    path: &Path,
    sets: &[String],
    concurrency: Option<&str>,
    requester: Requester,
) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("{}: cannot read the deployment file: {e}", path.display())))?;
    let document: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Failure::input(format!("{}: is not valid TOML: {}", path.display(), e.message()))
    })?;
    edit_document(document, sets, concurrency, requester)
}

/// `document` with the overrides and `requested_by` applied, as TOML text.
fn edit_document(
    mut document: toml::Table,
    sets: &[String],
    concurrency: Option<&str>,
    requester: Requester,
) -> Result<String, Failure> {
    for set in sets {
        apply_set(&mut document, "--set", set).map_err(Failure::input)?;
    }
    if let Some(concurrency) = concurrency {
        apply_set(&mut document, "--set", &format!("strategy.concurrency={concurrency}"))
            .map_err(Failure::input)?;
    }
    if requester == Requester::Server {
        document.remove("requested_by");
    } else if !document.contains_key("requested_by") {
        let who = std::env::var("VESEMIR_REQUESTED_BY")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".to_owned());
        document.insert("requested_by".into(), toml::Value::String(who));
    }
    toml::to_string(&document).map_err(|e| Failure::input(e.to_string()))
}
