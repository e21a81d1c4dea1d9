//! Watching a package repository: a unit may declare an APT repository and a package; the
//! server polls the repository's `Packages` index and deploys each newer version of the
//! package to the unit, as a CI hook's delivery would ([`crate::hooks`]).
//!
//! ```toml
//! [[units]]
//! team = "payments"
//! application = "shop"
//! environment = "staging"
//! version = "^[0-9][0-9A-Za-z.+~:-]{0,63}$"    # Debian versions may hold '~' and ':'
//! source = { apt = "https://apt.example.com/debian", suite = "stable", package = "shop-web" }
//! # component = "main", architecture = "amd64", interval = "1m": the defaults
//! ```
//!
//! `apt`, `suite` and `component` are what an operator writes in `sources.list`
//! (`deb https://apt.example.com/debian stable main`); the index read is
//! `{apt}/dists/{suite}/{component}/binary-{architecture}/Packages`. A flat repository
//! (`deb https://apt.example.com/debian ./`, as `dpkg-scanpackages . > Packages` makes) is
//! written with a `suite` ending in `/` and no `component`: its index is `{apt}/{suite}Packages`.
//! Only the uncompressed `Packages` index is read (dpkg-scanpackages, reprepro and aptly all
//! publish it), up to 128 MiB.
//!
//! Every `interval` (and once at start), each instance of the server polls the index with the
//! `ETag` and `Last-Modified` it last got (`If-None-Match`, `If-Modified-Since`: a 304 costs
//! nothing), finds the highest version (Debian order, [`vesemir_core::debian_version`]) of
//! the package that matches the unit's version pattern, and when it is newer than the last
//! version seen for the unit (at the very first poll: than the unit's last succeeded
//! deployment), hands it to the deliveries' path: recorded as delivery `VERSION` of trigger
//! `source:TEAM/APPLICATION/ENVIRONMENT`, unique in the database, so that across restarts and
//! across instances sharing the database a version starts one deployment at most; admitted
//! like any request, requested by `apt:PACKAGE`, queued while the unit deploys. The last
//! version seen and the validators are kept in the store ([`Store::set_source_state`]); a
//! lower version appearing, or the highest disappearing, does nothing.
//!
//! A repository that cannot be reached, answers an error, or serves an index that cannot be
//! read is logged (a warning when the problem changes), kept as the source's `error`, counted
//! in `vesemir_source_polls_total{unit, outcome="error"}` with `vesemir_source_up{unit}` at 0,
//! and polled again at the interval; it never stops the server.
//!
//! [`Store::set_source_state`]: crate::store::Store::set_source_state

use std::sync::{Arc, Weak};
use std::time::Duration;

use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use vesemir_core::debian_version::DebianVersion;
use vesemir_core::request::FieldError;

use crate::api::App;
use crate::auth::{Principal, PrincipalSource, Role};
use crate::catalog::UnitConfig;
use crate::clock::now_ms;
use crate::hooks::{Delivered, Trigger, WhenBusy};
use crate::store::{ListFilter, SourceState, Status};

/// The largest index read, in bytes.
const MAX_INDEX_BYTES: usize = 128 * 1024 * 1024;
/// The longest a poll may take (less when the interval is shorter).
const MAX_POLL_TIME: Duration = Duration::from_secs(60);
/// The shortest and longest intervals.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A unit's package source (`source = { apt = ..., package = ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The APT repository's URL, as in `sources.list` (`http://` or `https://`, no
    /// credentials, query or fragment).
    pub apt: String,
    /// The suite (`stable`, `bookworm`...), or for a flat repository a directory ending in `/`
    /// (`./`).
    pub suite: String,
    /// The component (`main`), for a suite that is not flat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The architecture whose index is read (`amd64`; `all` packages are listed in it too).
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// The package whose versions are deployed.
    pub package: String,
    /// How often the index is polled.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_architecture() -> String {
    "amd64".to_owned()
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

impl SourceConfig {
    /// Whether the suite is a flat repository's directory (it ends in `/`).
    fn is_flat(&self) -> bool {
        self.suite.ends_with('/')
    }

    /// The `Packages` index's URL.
    pub fn index_url(&self) -> String {
        let base = self.apt.trim_end_matches('/');
        if self.is_flat() {
            let dir = self.suite.trim_start_matches("./");
            format!("{base}/{dir}Packages")
        } else {
            format!(
                "{base}/dists/{}/{}/binary-{}/Packages",
                self.suite,
                self.component.as_deref().unwrap_or("main"),
                self.architecture
            )
        }
    }
}

/// The unit's name among stored sources and deliveries: `TEAM/APPLICATION/ENVIRONMENT`.
fn unit_name(unit: &UnitConfig) -> String {
    format!("{}/{}/{}", unit.team, unit.application, unit.environment)
}

/// Checks every unit's `source`, every problem at once under `units[i].source.FIELD`.
pub fn check(units: &[UnitConfig]) -> Vec<FieldError> {
    let mut problems = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let Some(source) = &unit.source else { continue };
        let at = |field: &str| format!("units[{i}].source.{field}");
        match reqwest::Url::parse(&source.apt) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                problems.push(FieldError::new(at("apt"), "must be an http:// or https:// URL"))
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => problems.push(
                FieldError::new(at("apt"), "must hold no credentials: they would show in logs"),
            ),
            Ok(url) if url.query().is_some() || url.fragment().is_some() => problems.push(FieldError::new(
                at("apt"),
                "must be the repository's URL as in sources.list, without '?' or '#'",
            )),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                problems.push(FieldError::new(at("apt"), "must name a host"))
            }
            Ok(_) => {}
            Err(e) => problems.push(FieldError::new(
                at("apt"),
                format!("is not a URL ({e}): give the repository's URL as in sources.list, e.g. \"https://apt.example.com/debian\""),
            )),
        }
        let path_safe = |text: &str| {
            !text.is_empty()
                && text.len() <= 100
                && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-/~".contains(&b))
                && !text.split('/').any(|part| part == "..")
        };
        if !path_safe(&source.suite) || source.suite.starts_with('/') {
            problems.push(FieldError::new(
                at("suite"),
                "must be a suite (\"stable\"), or a flat repository's directory ending in '/' (\"./\"): letters, digits, '._+-~/', no '..'",
            ));
        }
        match &source.component {
            Some(_) if source.is_flat() => problems.push(FieldError::new(
                at("component"),
                "is set for a flat repository (a suite ending in '/'), whose index has no component",
            )),
            Some(component) if !path_safe(component) || component.starts_with('/') => {
                problems.push(FieldError::new(at("component"), "must be a component such as \"main\""))
            }
            _ => {}
        }
        let word = |text: &str| {
            !text.is_empty()
                && text.len() <= 64
                && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-".contains(&b))
        };
        if !word(&source.architecture) {
            problems
                .push(FieldError::new(at("architecture"), "must be a Debian architecture such as \"amd64\""));
        }
        // Debian policy 5.6.1: lower case letters, digits, '+', '-', '.', at least two, starting
        // with a letter or digit.
        let package_ok = source.package.len() >= 2
            && source.package.len() <= 128
            && source.package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && source
                .package
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !package_ok {
            problems.push(FieldError::new(
                at("package"),
                "must be a Debian package name: at least 2 of a-z, 0-9, '+', '-', '.', starting with a letter or digit",
            ));
        }
        if source.interval < MIN_INTERVAL || source.interval > MAX_INTERVAL {
            problems.push(FieldError::new(at("interval"), "must be from 1s to 24h"));
        }
    }
    problems
}

/// The trigger a unit's source starts deployments through: its deliveries are its versions,
/// requested by `apt:PACKAGE`, queued while the unit deploys.
pub(crate) fn trigger(unit: &UnitConfig) -> Option<Trigger> {
    let source = unit.source.as_ref()?;
    let name = format!("source:{}", unit_name(unit));
    Some(Trigger {
        key_prefix: format!("{name} "),
        name,
        team: unit.team.clone(),
        application: unit.application.clone(),
        environment: unit.environment.clone(),
        principal: Principal {
            name: format!("apt:{}", source.package),
            source: PrincipalSource::Source,
            teams: [unit.team.clone()].into(),
            roles: [Role::Deploy].into(),
        },
        when_busy: WhenBusy::Queue,
        id_field: "source".to_owned(),
    })
}

/// One paragraph of a `Packages` index, the fields the watcher reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// `Package:`.
    pub package: String,
    /// `Version:`.
    pub version: String,
}

/// Why a `Packages` index cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A line that is neither `Field: value`, a continuation (leading space or tab), nor blank.
    #[error("line {line} is not a 'Field: value' line, a continuation or a blank line")]
    Line {
        /// From 1.
        line: usize,
    },
    /// A paragraph without `Package:` or `Version:`.
    #[error("the paragraph at line {line} has no {field} field")]
    Missing {
        /// The paragraph's first line, from 1.
        line: usize,
        /// `Package` or `Version`.
        field: &'static str,
    },
}

/// Reads a `Packages` index (deb822 paragraphs separated by blank lines): each paragraph's
/// package and version, in order. Field names are case-insensitive; other fields and
/// continuation lines are skipped; `#` comment lines are ignored.
pub fn parse_index(text: &str) -> Result<Vec<IndexEntry>, IndexError> {
    let mut entries = Vec::new();
    let mut package = None;
    let mut version = None;
    let mut start = None;
    let mut end_paragraph = |package: &mut Option<String>,
                             version: &mut Option<String>,
                             start: &mut Option<usize>|
     -> Result<(), IndexError> {
        let Some(line) = start.take() else { return Ok(()) };
        let package = package.take().ok_or(IndexError::Missing { line, field: "Package" })?;
        let version = version.take().ok_or(IndexError::Missing { line, field: "Version" })?;
        entries.push(IndexEntry { package, version });
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            end_paragraph(&mut package, &mut version, &mut start)?;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if start.is_none() {
                return Err(IndexError::Line { line: n + 1 });
            }
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            return Err(IndexError::Line { line: n + 1 });
        };
        if field.is_empty() || field.contains(char::is_whitespace) {
            return Err(IndexError::Line { line: n + 1 });
        }
        start.get_or_insert(n + 1);
        if field.eq_ignore_ascii_case("Package") {
            package = Some(value.trim().to_owned());
        } else if field.eq_ignore_ascii_case("Version") {
            version = Some(value.trim().to_owned());
        }
    }
    end_paragraph(&mut package, &mut version, &mut start)?;
    Ok(entries)
}

/// The highest version of `package` among `entries` that `accept` takes (the unit's version
/// pattern); entries whose version is not a Debian version are skipped.
pub fn highest<'a>(
    entries: &'a [IndexEntry],
    package: &str,
    accept: impl Fn(&str) -> bool,
) -> Option<DebianVersion> {
    entries
        .iter()
        .filter(|e: &&'a IndexEntry| e.package == package && accept(&e.version))
        .filter_map(|e| DebianVersion::parse(&e.version).ok())
        .max()
}

/// Starts one watcher per unit with a source; each stops when the app is gone.
pub fn watch_all(app: &Arc<App>, units: &[UnitConfig]) {
    for unit in units {
        let (Some(source), Some(trigger)) = (unit.source.clone(), trigger(unit)) else { continue };
        tokio::spawn(watch(Arc::downgrade(app), unit_name(unit), source, trigger));
    }
}

/// Polls one unit's source at its interval, until the app is gone.
async fn watch(app: Weak<App>, unit: String, source: SourceConfig, trigger: Trigger) {
    let client = match reqwest::Client::builder()
        .timeout(source.interval.min(MAX_POLL_TIME).max(Duration::from_secs(5)))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("vesemir/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(unit = %unit, error = %e, "the package source's HTTP client could not be built: the source is not watched");
            return;
        }
    };
    let mut ticks = tokio::time::interval(source.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        ticks.tick().await;
        let Some(app) = app.upgrade() else { return };
        let outcome = poll(&app, &client, &unit, &source, &trigger).await;
        let (label, error) = match outcome {
            Ok(Polled::NotModified) => ("not_modified", None),
            Ok(Polled::Read) => ("read", None),
            Err(error) => ("error", Some(error)),
        };
        app.metrics.source_polled(&unit, label);
        match &error {
            Some(error) if last_error.as_ref() != Some(error) => {
                tracing::warn!(unit = %unit, index = %source.index_url(), error = %error, "the package source could not be read: polled again at the interval")
            }
            Some(error) => {
                tracing::debug!(unit = %unit, error = %error, "the package source still cannot be read")
            }
            None if last_error.is_some() => {
                tracing::info!(unit = %unit, index = %source.index_url(), "the package source can be read again")
            }
            None => {}
        }
        last_error = error;
    }
}

/// What a poll found.
enum Polled {
    /// 304: the index did not change.
    NotModified,
    /// The index was read (and a newer version handed on, if there was one).
    Read,
}

/// One poll: fetch (conditionally), find the highest version, hand it on when newer, record.
/// `Err` is the problem, already recorded as the source's `error` when the store could be
/// reached.
async fn poll(
    app: &App,
    client: &reqwest::Client,
    unit: &str,
    source: &SourceConfig,
    trigger: &Trigger,
) -> Result<Polled, String> {
    let url = source.index_url();
    let stored = app.store.source_state(unit).await.map_err(|e| e.to_string())?;
    let mut state = match stored {
        Some(state) if state.index_url == url => state,
        // A new source (or another index: its validators do not apply, the version seen does).
        other => SourceState {
            unit: unit.to_owned(),
            index_url: url.clone(),
            package: source.package.clone(),
            seen_version: other.and_then(|s| s.seen_version),
            etag: None,
            last_modified: None,
            checked_ms: 0,
            error: None,
        },
    };
    state.package = source.package.clone();
    state.checked_ms = now_ms();
    let result = fetch_and_hand_on(app, client, source, trigger, &url, &mut state).await;
    state.error = result.as_ref().err().cloned();
    app.store.set_source_state(&state).await.map_err(|e| e.to_string())?;
    result
}

async fn fetch_and_hand_on(
    app: &App,
    client: &reqwest::Client,
    source: &SourceConfig,
    trigger: &Trigger,
    url: &str,
    state: &mut SourceState,
) -> Result<Polled, String> {
    let mut request = client.get(url);
    if let Some(etag) = &state.etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    if let Some(modified) = &state.last_modified {
        request = request.header(IF_MODIFIED_SINCE, modified);
    }
    let mut response =
        request.send().await.map_err(|e| format!("the repository could not be reached: {}", describe(&e)))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Polled::NotModified);
    }
    if !status.is_success() {
        return Err(format!("the index answered {status}"));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(ToOwned::to_owned)
    };
    let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| format!("the index could not be read: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_INDEX_BYTES {
            return Err(format!("the index is larger than {} MiB", MAX_INDEX_BYTES / (1024 * 1024)));
        }
        body.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&body).map_err(|_| {
        "the index is not UTF-8 text (a compressed index? give the plain Packages)".to_owned()
    })?;
    let entries = parse_index(text).map_err(|e| format!("the index cannot be read: {e}"))?;
    let (team, application, environment) = (&trigger.team, &trigger.application, &trigger.environment);
    let highest = highest(&entries, &source.package, |v| {
        app.catalog.version_matches(team, application, environment, v).is_ok()
    });
    let Some(highest) = highest else {
        // Validators kept: the same index is not read again until it changes.
        state.etag = etag;
        state.last_modified = last_modified;
        return Err(format!(
            "the index lists no version of {} that matches the unit's version pattern",
            source.package
        ));
    };
    let baseline = match &state.seen_version {
        Some(seen) => Some(seen.clone()),
        None => last_succeeded(app, trigger).await?,
    };
    let newer = baseline
        .as_deref()
        .is_none_or(|b| vesemir_core::debian_version::compare(highest.as_str(), b).is_gt());
    if newer {
        let version = highest.as_str();
        let body_sha256 = crate::auth::sha256_hex(
            format!("{}\n{url}\n{}\n{version}", trigger.name, source.package).as_bytes(),
        );
        let delivered = crate::hooks::deliver(app, trigger, version, version, &body_sha256)
            .await
            .map_err(|e| format!("the new version {version} could not be recorded: {e}"))?;
        match &delivered {
            Delivered::Started(id) => {
                tracing::info!(unit = %state.unit, version, deployment = id, "a new version in the package source: deploying it")
            }
            Delivered::Waiting => {
                tracing::info!(unit = %state.unit, version, "a new version in the package source: it waits for the unit")
            }
            Delivered::Before => {
                tracing::debug!(unit = %state.unit, version, "a new version in the package source, handed on before")
            }
            Delivered::Refused(why) => {
                tracing::warn!(unit = %state.unit, version, reason = %why, "a new version in the package source was refused")
            }
        }
        state.seen_version = Some(version.to_owned());
        if let Delivered::Refused(why) = delivered {
            state.etag = etag;
            state.last_modified = last_modified;
            return Err(format!("version {version} was refused: {why}"));
        }
    } else if state.seen_version.is_none() {
        state.seen_version = baseline;
    }
    state.etag = etag;
    state.last_modified = last_modified;
    Ok(Polled::Read)
}

/// The version of the unit's last succeeded deployment, if any.
async fn last_succeeded(app: &App, trigger: &Trigger) -> Result<Option<String>, String> {
    let filter = ListFilter {
        application: Some(trigger.application.clone()),
        environment: Some(trigger.environment.clone()),
        team: Some(trigger.team.clone()),
        status: Some(Status::Succeeded),
        before: None,
        limit: 1,
    };
    let found = app.store.list(&filter).await.map_err(|e| e.to_string())?;
    Ok(found.into_iter().next().map(|d| d.version))
}

/// A reqwest error with its causes (reqwest's own text omits them), never a URL's secrets: the
/// URL holds none ([`check`]).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "\
Package: shop-web
Version: 1.0-1
Architecture: amd64
Description: the shop
 a long description
 .
 over several lines

Package: other
Version: 9.9

package: shop-web
version: 1.1~rc1
Filename: pool/shop-web_1.1~rc1_all.deb

Package: shop-web
Version: 1:0.1
";

    #[test]
    fn reads_paragraphs_and_skips_continuations() {
        let entries = parse_index(INDEX).expect("reads");
        let pairs: Vec<(&str, &str)> =
            entries.iter().map(|e| (e.package.as_str(), e.version.as_str())).collect();
        assert_eq!(
            pairs,
            [("shop-web", "1.0-1"), ("other", "9.9"), ("shop-web", "1.1~rc1"), ("shop-web", "1:0.1")]
        );
    }

    #[test]
    fn the_highest_matching_version_wins() {
        let entries = parse_index(INDEX).expect("reads");
        let all = highest(&entries, "shop-web", |_| true).expect("one");
        assert_eq!(all.as_str(), "1:0.1");
        let no_epoch = highest(&entries, "shop-web", |v| !v.contains(':')).expect("one");
        assert_eq!(no_epoch.as_str(), "1.1~rc1");
        assert_eq!(highest(&entries, "missing", |_| true), None);
        assert!(parse_index("").expect("empty").is_empty());
        assert!(parse_index("\n\n\r\n").expect("blank").is_empty());
        // CRLF line ends, and a bad version skipped.
        let crlf = parse_index("Package: a\r\nVersion: 2.0\r\n\r\nPackage: a\r\nVersion: not-a-version\r\n")
            .expect("reads");
        assert_eq!(highest(&crlf, "a", |_| true).map(|v| v.to_string()), Some("2.0".to_owned()));
    }

    #[test]
    fn a_bad_index_says_where() {
        assert_eq!(parse_index("Package: a\nnonsense\n"), Err(IndexError::Line { line: 2 }));
        assert_eq!(parse_index(" continuation first\n"), Err(IndexError::Line { line: 1 }));
        assert_eq!(
            parse_index("Package: a\nVersion: 1\n\nPackage: b\n"),
            Err(IndexError::Missing { line: 4, field: "Version" })
        );
        assert_eq!(parse_index("Version: 1\n"), Err(IndexError::Missing { line: 1, field: "Package" }));
        assert!(parse_index("<html><body>Not found</body></html>").is_err());
    }

    fn unit_with(source: &str) -> UnitConfig {
        toml::from_str(&format!(
            r#"
team = "payments"
application = "shop"
environment = "production"
playbooks = ["web"]
targets = {{ hosts = [{{ name = "web-01", address = "127.0.0.1" }}] }}
load_balancer = {{ backend = "be_shop", instances = [{{ socket = "/run/haproxy.sock" }}] }}
source = {source}
"#
        ))
        .expect("unit")
    }

    #[test]
    fn a_source_is_checked_field_by_field() {
        let good = unit_with(
            r#"{ apt = "https://apt.example.com/debian", suite = "stable", package = "shop-web" }"#,
        );
        assert_eq!(check(std::slice::from_ref(&good)), []);
        let source = good.source.as_ref().expect("a source");
        assert_eq!((source.interval, source.architecture.as_str()), (Duration::from_secs(60), "amd64"));
        let flat = unit_with(
            r#"{ apt = "http://127.0.0.1:8000", suite = "./", package = "shop", interval = "1s" }"#,
        );
        assert_eq!(check(&[flat]), []);
        let bad = unit_with(
            r#"{ apt = "ftp://user:pw@apt.example.com", suite = "../etc", component = "main;rm", architecture = "AMD64", package = "Shop_Web", interval = "0s" }"#,
        );
        let fields: Vec<String> = check(&[good, bad]).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "units[1].source.apt",
                "units[1].source.suite",
                "units[1].source.component",
                "units[1].source.architecture",
                "units[1].source.package",
                "units[1].source.interval"
            ]
        );
        for (apt, says) in [
            ("https://user:secret@apt.example.com", "credentials"),
            ("https://apt.example.com/?x=1", "without '?'"),
            ("apt.example.com/debian", "is not a URL"),
        ] {
            let unit = unit_with(&format!(r#"{{ apt = "{apt}", suite = "stable", package = "shop" }}"#));
            let problems = check(&[unit]);
            assert!(problems.len() == 1 && problems[0].message.contains(says), "{apt}: {problems:?}");
            assert!(!problems[0].message.contains("secret"), "{problems:?}");
        }
        let flat_with_component =
            unit_with(r#"{ apt = "http://127.0.0.1", suite = "./", component = "main", package = "shop" }"#);
        assert_eq!(check(&[flat_with_component])[0].field, "units[0].source.component");
        let unknown = toml::from_str::<SourceConfig>(
            "apt = \"http://x\"\nsuite = \"s\"\npackage = \"p\"\nurl = \"y\"\n",
        );
        assert!(unknown.is_err_and(|e| e.to_string().contains("url")));
    }

    #[test]
    fn index_urls() {
        let mut source = SourceConfig {
            apt: "http://127.0.0.1:8000/debian/".to_owned(),
            suite: "stable".to_owned(),
            component: None,
            architecture: "amd64".to_owned(),
            package: "shop-web".to_owned(),
            interval: Duration::from_secs(30),
        };
        assert_eq!(
            source.index_url(),
            "http://127.0.0.1:8000/debian/dists/stable/main/binary-amd64/Packages"
        );
        source.component = Some("contrib".to_owned());
        source.architecture = "arm64".to_owned();
        assert_eq!(
            source.index_url(),
            "http://127.0.0.1:8000/debian/dists/stable/contrib/binary-arm64/Packages"
        );
        source.component = None;
        source.suite = "./".to_owned();
        assert_eq!(source.index_url(), "http://127.0.0.1:8000/debian/Packages");
        source.suite = "repo/".to_owned();
        assert_eq!(source.index_url(), "http://127.0.0.1:8000/debian/repo/Packages");
    }
}
