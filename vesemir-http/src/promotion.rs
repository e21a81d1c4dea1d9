//! Promotion: a unit may name the unit its versions go to next (`promote_to`, e.g. staging →
//! production). When a deployment of it succeeds on every host, the same version is deployed to
//! the next unit, after an optional hold; a failure stops the chain (only a `succeeded`
//! deployment promotes). The promoted deployment is requested by whoever requested the first,
//! with the next unit's defaults, and records `promoted_from` (the history shows it).
//!
//! ```toml
//! [[units]]
//! team = "payments"
//! application = "shop"
//! environment = "staging"
//! promote_to = "production"      # same team: "ENVIRONMENT" or "APPLICATION/ENVIRONMENT"
//! promote_hold = "10m"           # optional: wait this long after success first
//! ```
//!
//! A rollback never promotes. While the next unit deploys, the promotion waits for it (checked
//! every 2 s, at most `limits.deployment_timeout`); a refusal (the fleet's state, the next
//! unit's pattern) is logged and recorded as the promoting deployment's `error`. A hold runs in
//! the server's memory: a server stopped during it does not promote.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use vesemir_core::request::FieldError;

use crate::api::App;
use crate::auth::{Principal, PrincipalSource, Role};
use crate::catalog::UnitConfig;
use crate::runner::{SubmitError, Submitted};
use crate::store::Status;

/// How often a promotion whose next unit is busy looks again.
const BUSY_RETRY: Duration = Duration::from_secs(2);
/// The longest hold.
const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);

/// A unit, as (team, application, environment).
type UnitKey = (String, String, String);

/// Resolves `promote_to` of `unit`: the same team's unit named `ENVIRONMENT` (same
/// application) or `APPLICATION/ENVIRONMENT`.
fn target_of(unit: &UnitConfig, to: &str) -> UnitKey {
    match to.split_once('/') {
        Some((application, environment)) => {
            (unit.team.clone(), application.to_owned(), environment.to_owned())
        }
        None => (unit.team.clone(), unit.application.clone(), to.to_owned()),
    }
}

fn key_of(unit: &UnitConfig) -> UnitKey {
    (unit.team.clone(), unit.application.clone(), unit.environment.clone())
}

/// Checks every unit's `promote_to` and `promote_hold`: the next unit exists (same team), is not
/// the unit itself, no chain loops, the hold is at most 7 days and set only with `promote_to`.
pub fn check(units: &[UnitConfig]) -> Vec<FieldError> {
    let mut problems = Vec::new();
    let known: BTreeSet<UnitKey> = units.iter().map(key_of).collect();
    let next: HashMap<UnitKey, UnitKey> =
        units.iter().filter_map(|u| Some((key_of(u), target_of(u, u.promote_to.as_deref()?)))).collect();
    for (i, unit) in units.iter().enumerate() {
        let at = format!("units[{i}]");
        if let Some(hold) = unit.promote_hold {
            if unit.promote_to.is_none() {
                problems.push(FieldError::new(format!("{at}.promote_hold"), "is set without promote_to"));
            }
            if hold > MAX_HOLD {
                problems.push(FieldError::new(format!("{at}.promote_hold"), "must be at most 7d"));
            }
        }
        let Some(to) = &unit.promote_to else { continue };
        let target = target_of(unit, to);
        if target == key_of(unit) {
            problems.push(FieldError::new(format!("{at}.promote_to"), "names the unit itself"));
            continue;
        }
        if !known.contains(&target) {
            problems.push(FieldError::new(
                format!("{at}.promote_to"),
                format!(
                    "names no unit of team {}: {}/{} is not in the catalog (give ENVIRONMENT or APPLICATION/ENVIRONMENT)",
                    target.0, target.1, target.2
                ),
            ));
            continue;
        }
        // Follow the chain: it must end.
        let mut seen = BTreeSet::from([key_of(unit)]);
        let mut at_unit = target;
        while let Some(after) = next.get(&at_unit) {
            if !seen.insert(at_unit.clone()) {
                problems.push(FieldError::new(
                    format!("{at}.promote_to"),
                    "makes a promotion chain that loops back: a chain must end",
                ));
                break;
            }
            at_unit = after.clone();
        }
    }
    problems
}

/// Where each unit promotes to.
#[derive(Debug, Default)]
pub struct Promotions {
    next: HashMap<UnitKey, (UnitKey, Option<Duration>)>,
}

impl Promotions {
    /// The promotions of checked `units` ([`check`]).
    pub fn from_units(units: &[UnitConfig]) -> Self {
        let next = units
            .iter()
            .filter_map(|u| Some((key_of(u), (target_of(u, u.promote_to.as_deref()?), u.promote_hold))))
            .collect();
        Self { next }
    }
}

/// Once deployment `id` has ended: when it succeeded on every host (not a rollback) and its unit
/// promotes, deploys the same version to the next unit (after the hold), once.
pub async fn after_end(app: Arc<App>, id: i64) {
    if let Err(e) = promote(&app, id).await {
        tracing::error!(deployment = id, error = %e, "the promotion could not be read or recorded");
    }
}

async fn promote(app: &App, id: i64) -> Result<(), crate::store::StoreError> {
    let Some(record) = app.store.get(id).await? else { return Ok(()) };
    if record.status != Status::Succeeded {
        return Ok(());
    }
    let unit = (record.team.clone(), record.application.clone(), record.environment.clone());
    let Some((target, hold)) = app.promotions.next.get(&unit).cloned() else { return Ok(()) };
    if app.store.origin(id).await?.is_some_and(|o| o.rollback_of.is_some()) {
        return Ok(());
    }
    if app.store.promoted_to(id).await?.is_some() {
        return Ok(());
    }
    if let Some(hold) = hold {
        tracing::info!(deployment = id, hold = %humantime::format_duration(hold), to = %target.2, "holding before the promotion");
        tokio::time::sleep(hold).await;
    }
    let principal = Principal {
        name: record.requested_by.clone(),
        source: PrincipalSource::Promotion,
        teams: [target.0.clone()].into(),
        roles: [Role::Deploy].into(),
    };
    let body = serde_json::json!({
        "team": target.0, "application": target.1, "environment": target.2, "version": record.version,
    })
    .to_string();
    let deadline = tokio::time::Instant::now() + app.limits.deployment_timeout;
    let refused =
        |why: String| format!("promotion of {} to {}/{} refused: {why}", record.version, target.1, target.2);
    loop {
        let admitted = match app.catalog.admit(&body, &principal, &app.playbooks) {
            Ok(admitted) => admitted,
            Err(denied) => {
                let why = crate::api::ApiError::denied(&denied);
                return record_refusal(app, id, &refused(why.detail().to_owned())).await;
            }
        };
        let ports = match crate::api::ports_for(app, &admitted.request) {
            Ok(ports) => ports,
            Err(e) => return record_refusal(app, id, &refused(e.detail().to_owned())).await,
        };
        if let Err(e) = app.runner.precheck(&admitted.request, &ports).await {
            return record_refusal(app, id, &refused(e.to_string())).await;
        }
        let new = match admitted.to_record(
            &principal.name,
            Some(format!("promotion of deployment {id}")),
            crate::auth::sha256_hex(body.as_bytes()),
        ) {
            Ok(new) => new,
            Err(e) => {
                return record_refusal(app, id, &refused(format!("the request could not be encoded: {e}")))
                    .await
            }
        };
        let submitted = app
            .runner
            .submit_with(admitted.request, ports, new, crate::store::Origin::default(), admitted.secrets)
            .await;
        let promoted = match submitted {
            Ok(Submitted::New(promoted)) => promoted,
            Ok(Submitted::Existing(existing)) => existing.id,
            Err(SubmitError::Conflict(_) | SubmitError::QueueFull(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(BUSY_RETRY).await;
                continue;
            }
            Err(SubmitError::Store(e)) => return Err(e),
            Err(e) => return record_refusal(app, id, &refused(e.to_string())).await,
        };
        if app.store.promoted_from(promoted).await?.is_none() {
            app.store.set_promoted_from(promoted, id).await?;
        }
        tracing::info!(deployment = id, promoted, to = %target.2, version = %record.version, "promoted");
        return Ok(());
    }
}

async fn record_refusal(app: &App, id: i64, why: &str) -> Result<(), crate::store::StoreError> {
    tracing::warn!(deployment = id, reason = why, "no promotion");
    app.store.set_error(id, why).await
}
