//! Reads a deployment file and applies `--set` and `--concurrency` before validation.

use std::path::Path;

use vesemir_core::request::spec::RequestSpec;
use vesemir_core::request::{DeploymentRequest, InlineChangesets, RawQueries, RequestPolicy};

use crate::config::Config;
use crate::exit::Failure;

/// Reads `path`, applies the overrides and validates it against the configuration's playbooks.
pub fn load(
    path: &Path,
    sets: &[String],
    concurrency: Option<&str>,
    config: &Config,
) -> Result<DeploymentRequest, Failure> {
    let spec = spec(path, sets, concurrency, Requester::FromEnvironment)?;
    let policy = RequestPolicy {
        playbooks: &config.playbooks,
        inline_changesets: InlineChangesets::Allowed,
        raw_queries: RawQueries::Allowed,
    };
    spec.validate(&policy).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}

/// Who the request says asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// `requested_by` from the file, else `$VESEMIR_REQUESTED_BY` or `$USER` (local deploys).
    FromEnvironment,
    /// Left to the server, which records the token's name.
    Server,
}

/// Reads `path` and applies the overrides, without validating against playbooks.
pub fn spec(
    path: &Path,
    sets: &[String],
    concurrency: Option<&str>,
    requester: Requester,
) -> Result<RequestSpec, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("{}: cannot read the deployment file: {e}", path.display())))?;
    let mut document: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Failure::input(format!("{}: is not valid TOML: {}", path.display(), e.message()))
    })?;
    for set in sets {
        apply_set(&mut document, set)?;
    }
    if let Some(concurrency) = concurrency {
        apply_set(&mut document, &format!("strategy.concurrency={concurrency}"))?;
    }
    if requester == Requester::Server {
        document.remove("requested_by");
    } else if !document.contains_key("requested_by") {
        let who = std::env::var("VESEMIR_REQUESTED_BY")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".to_owned());
        document.insert("requested_by".into(), toml::Value::String(who));
    }
    let text = toml::to_string(&document).map_err(|e| Failure::input(e.to_string()))?;
    RequestSpec::from_toml(&text).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}

/// Applies one `KEY=VALUE`, where KEY is a dotted path (`version`, `variables.channel`,
/// `strategy.max_failures`). The value replaces a string as a string; elsewhere it is read as a
/// TOML value when it is one (`3`, `true`, `"25%"`), else as a string.
pub fn apply_set(document: &mut toml::Table, set: &str) -> Result<(), Failure> {
    let Some((key, value)) = set.split_once('=') else {
        return Err(Failure::input(format!("--set {set:?}: write KEY=VALUE, e.g. --set version=1.2.3")));
    };
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(Failure::input(format!(
            "--set {set:?}: {key:?} is not a key path like version or variables.channel"
        )));
    }
    let (last, parents) = path.split_last().ok_or_else(|| Failure::input("--set needs a key"))?;
    let mut table = document;
    for part in parents {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(Failure::input(format!("--set {set:?}: {part} is not a table"))),
        };
    }
    let as_string = toml::Value::String(value.to_owned());
    let new = match table.get(*last) {
        Some(toml::Value::String(_)) => as_string,
        _ if parents.first() == Some(&"variables") => as_string,
        _ => format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(as_string),
    };
    table.insert(last.to_string(), new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keep_strings_strings_and_type_the_rest() {
        let mut document: toml::Table =
            "version = \"1\"\n[strategy]\nconcurrency = 1\n".parse().expect("toml");
        apply_set(&mut document, "version=2").expect("set");
        apply_set(&mut document, "strategy.concurrency=25%").expect("set");
        apply_set(&mut document, "strategy.max_failures=2").expect("set");
        apply_set(&mut document, "variables.channel=42").expect("set");
        assert_eq!(document["version"].as_str(), Some("2"));
        assert_eq!(document["strategy"]["concurrency"].as_str(), Some("25%"));
        assert_eq!(document["strategy"]["max_failures"].as_integer(), Some(2));
        assert_eq!(document["variables"]["channel"].as_str(), Some("42"));
        assert!(apply_set(&mut document, "version").is_err());
        assert!(apply_set(&mut document, "version.x=1").is_err());
    }
}
