//! Promotion: a unit may name the unit its versions go to next (`promote_to`, e.g. staging →
//! production). When a deployment of it succeeds on every host, the same version is deployed to
//! the next unit, after an optional hold, or once a person confirmed it; a failure stops the
//! chain (only a `succeeded` deployment promotes). The promoted deployment is requested by
//! whoever requested the first (or by the person who confirmed it), with the next unit's
//! defaults, and records `promoted_from` (the history shows it).
//!
//! ```toml
//! [[units]]
//! team = "payments"
//! application = "shop"
//! environment = "staging"
//! promote_to = "production"      # same team: "ENVIRONMENT" or "APPLICATION/ENVIRONMENT"
//! promote_hold = "10m"           # optional: wait this long after success first
//! # or, instead of a hold:
//! promote_confirm = true         # wait for a person of the team to confirm it
//! promote_confirm_within = "2d"  # optional: it expires after this (default and most: 7d)
//! ```
//!
//! A rollback never promotes. While the next unit deploys, the promotion waits for it (checked
//! every 2 s, at most `limits.deployment_timeout`); a refusal (the fleet's state, the next
//! unit's pattern) is logged and recorded as the promoting deployment's `error`. A hold runs in
//! the server's memory: a server stopped during it does not promote.
//!
//! **Confirmation** (`promote_confirm`): the success is recorded in the store as a promotion
//! `waiting_confirmation` ([`Store::record_promotion_wait`](crate::store::Store::record_promotion_wait)),
//! so it survives a restart and any instance sharing the database can confirm it; the units'
//! notification targets get `waiting_for_confirmation` with a `promotion` member. A person
//! who may deploy for the team confirms (`POST /v1/deployments/{id}/promotion/confirm`, `vesemir
//! promote confirm ID`, the deployment's web page) or declines it (`.../promotion/decline`).
//! A confirmation tries once, at once: the next unit busy (409) or refusing (422) leaves the
//! promotion waiting, to confirm again. A newer success of the same unit supersedes an older
//! one still waiting, and one not confirmed within `promote_confirm_within` expires. Every
//! decision is taken once across instances (compare-and-set in the store); a server killed
//! between a confirmation and the start of its deployment leaves it `confirmed`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use vesemir_core::request::FieldError;

use crate::api::App;
use crate::auth::{Principal, PrincipalSource, Role};
use crate::catalog::UnitConfig;
use crate::clock::now_ms;
use crate::runner::{SubmitError, Submitted};
use crate::store::{DeploymentRecord, PromotionStatus, PromotionWait, Status, StoreError};

/// How often a promotion whose next unit is busy looks again.
const BUSY_RETRY: Duration = Duration::from_secs(2);
/// The longest hold, and the longest wait for a confirmation.
const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);

/// A unit, as (team, application, environment).
pub(crate) type UnitKey = (String, String, String);

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

/// Checks every unit's `promote_to`, `promote_hold` and `promote_confirm`: the next unit exists
/// (same team), is not the unit itself, no chain loops, a hold or a confirmation (not both) only
/// with `promote_to`, each within 7 days.
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
            if unit.promote_confirm {
                problems.push(FieldError::new(
                    format!("{at}.promote_confirm"),
                    "is set with promote_hold: choose one (a person's confirmation is the hold)",
                ));
            }
        }
        if unit.promote_confirm && unit.promote_to.is_none() {
            problems.push(FieldError::new(format!("{at}.promote_confirm"), "is set without promote_to"));
        }
        if let Some(within) = unit.promote_confirm_within {
            if !unit.promote_confirm {
                problems.push(FieldError::new(
                    format!("{at}.promote_confirm_within"),
                    "is set without promote_confirm = true",
                ));
            }
            if within.is_zero() || within > MAX_HOLD {
                problems.push(FieldError::new(
                    format!("{at}.promote_confirm_within"),
                    "must be above 0 and at most 7d",
                ));
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

/// How a unit's successes go on to the next unit.
#[derive(Debug, Clone)]
struct Next {
    /// The next unit.
    to: UnitKey,
    /// The wait after the success.
    hold: Option<Duration>,
    /// With `promote_confirm`: how long the promotion waits for a person.
    confirm_within: Option<Duration>,
}

/// Where each unit promotes to.
#[derive(Debug, Default)]
pub struct Promotions {
    next: HashMap<UnitKey, Next>,
}

impl Promotions {
    /// The promotions of checked `units` ([`check`]).
    pub fn from_units(units: &[UnitConfig]) -> Self {
        let next = units
            .iter()
            .filter_map(|u| {
                let next = Next {
                    to: target_of(u, u.promote_to.as_deref()?),
                    hold: u.promote_hold,
                    confirm_within: u.promote_confirm.then(|| u.promote_confirm_within.unwrap_or(MAX_HOLD)),
                };
                Some((key_of(u), next))
            })
            .collect();
        Self { next }
    }
}

/// Once deployment `id` has ended: when it succeeded on every host (not a rollback) and its unit
/// promotes, deploys the same version to the next unit (after the hold), once; or, when the unit
/// wants a confirmation, records the promotion as waiting for one and notifies.
pub async fn after_end(app: Arc<App>, id: i64) {
    if let Err(e) = promote(&app, id).await {
        tracing::error!(deployment = id, error = %e, "the promotion could not be read or recorded");
    }
}

async fn promote(app: &App, id: i64) -> Result<(), StoreError> {
    let Some(record) = app.store.get(id).await? else { return Ok(()) };
    if record.status != Status::Succeeded {
        return Ok(());
    }
    let unit = (record.team.clone(), record.application.clone(), record.environment.clone());
    let Some(next) = app.promotions.next.get(&unit).cloned() else { return Ok(()) };
    if app.store.origin(id).await?.is_some_and(|o| o.rollback_of.is_some()) {
        return Ok(());
    }
    if app.store.promoted_to(id).await?.is_some() {
        return Ok(());
    }
    let target = next.to;
    if let Some(within) = next.confirm_within {
        let created_ms = now_ms();
        let wait = PromotionWait {
            deployment_id: id,
            to_application: target.1.clone(),
            to_environment: target.2.clone(),
            status: PromotionStatus::WaitingConfirmation,
            created_ms,
            expires_ms: created_ms.saturating_add(i64::try_from(within.as_millis()).unwrap_or(i64::MAX)),
            decided_by: None,
            decided_ms: None,
        };
        if app.store.record_promotion_wait(&wait).await? {
            tracing::info!(deployment = id, to = %format!("{}/{}", target.1, target.2), version = %record.version, "the promotion waits for a person's confirmation");
            app.notifier.promotion_waiting(id, &unit, &target).await;
        }
        return Ok(());
    }
    if let Some(hold) = next.hold {
        tracing::info!(deployment = id, hold = %humantime::format_duration(hold), to = %target.2, "holding before the promotion");
        tokio::time::sleep(hold).await;
    }
    let deadline = tokio::time::Instant::now() + app.limits.deployment_timeout;
    loop {
        match launch(app, &record, &target, &record.requested_by).await? {
            Launch::Started(_) => return Ok(()),
            Launch::Busy(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(BUSY_RETRY).await;
            }
            Launch::Busy(why) | Launch::Refused(why) => return record_refusal(app, id, &why).await,
        }
    }
}

/// What one attempt to start a promotion's deployment did.
#[derive(Debug)]
enum Launch {
    /// The next unit's deployment was started (or had been, by the same requester): its id.
    Started(i64),
    /// The next unit is busy (another deployment of it runs, or the queue is full): why.
    Busy(String),
    /// The next unit refuses it (its catalog entry, the fleet's real state): why.
    Refused(String),
}

/// Tries once to deploy `record`'s version to unit `target`, requested by `requester`
/// (idempotent per requester: the key is `promotion of deployment N`), and links the two.
async fn launch(
    app: &App,
    record: &DeploymentRecord,
    target: &UnitKey,
    requester: &str,
) -> Result<Launch, StoreError> {
    let id = record.id;
    let principal = Principal {
        name: requester.to_owned(),
        source: PrincipalSource::Promotion,
        teams: [target.0.clone()].into(),
        roles: [Role::Deploy].into(),
    };
    let body = serde_json::json!({
        "team": target.0, "application": target.1, "environment": target.2, "version": record.version,
    })
    .to_string();
    let refused =
        |why: String| format!("promotion of {} to {}/{} refused: {why}", record.version, target.1, target.2);
    let admitted = match app.catalog.admit(&body, &principal, &app.playbooks) {
        Ok(admitted) => admitted,
        Err(denied) => {
            let why = crate::api::ApiError::denied(&denied);
            return Ok(Launch::Refused(refused(why.detail().to_owned())));
        }
    };
    let ports = match crate::api::ports_for(app, &admitted.request) {
        Ok(ports) => ports,
        Err(e) => return Ok(Launch::Refused(refused(e.detail().to_owned()))),
    };
    if let Err(e) = app.runner.precheck(&admitted.request, &ports).await {
        return Ok(Launch::Refused(refused(e.to_string())));
    }
    let new = match admitted.to_record(
        &principal.name,
        Some(format!("promotion of deployment {id}")),
        crate::auth::sha256_hex(body.as_bytes()),
    ) {
        Ok(new) => new,
        Err(e) => return Ok(Launch::Refused(refused(format!("the request could not be encoded: {e}")))),
    };
    let submitted = app
        .runner
        .submit_with(admitted.request, ports, new, crate::store::Origin::default(), admitted.secrets)
        .await;
    let promoted = match submitted {
        Ok(Submitted::New(promoted)) => promoted,
        Ok(Submitted::Existing(existing)) => existing.id,
        Err(e @ (SubmitError::Conflict(_) | SubmitError::QueueFull(_))) => {
            return Ok(Launch::Busy(refused(e.to_string())))
        }
        Err(SubmitError::Store(e)) => return Err(e),
        Err(e) => return Ok(Launch::Refused(refused(e.to_string()))),
    };
    if app.store.promoted_from(promoted).await?.is_none() {
        app.store.set_promoted_from(promoted, id).await?;
    }
    tracing::info!(deployment = id, promoted, to = %target.2, version = %record.version, by = requester, "promoted");
    Ok(Launch::Started(promoted))
}

async fn record_refusal(app: &App, id: i64, why: &str) -> Result<(), StoreError> {
    tracing::warn!(deployment = id, reason = why, "no promotion");
    app.store.set_error(id, why).await
}

/// Why a promotion could not be confirmed or declined.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The deployment has no promotion that waits for a person.
    #[error("deployment {0} has no promotion waiting for confirmation")]
    NoneWaiting(i64),
    /// It was decided already, superseded or expired (its status says which).
    #[error("the promotion of deployment {id} is {}: nothing to decide", status.as_str())]
    NotWaiting {
        /// The deployment.
        id: i64,
        /// Where its promotion stands.
        status: PromotionStatus,
    },
    /// The next unit is busy: it still waits; confirm again once that ended.
    #[error("{0}; the promotion still waits: confirm it again once the next unit is free")]
    Busy(String),
    /// The next unit refuses it: it still waits.
    #[error("{0}; the promotion still waits")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads deployment `record`'s waiting promotion, refusing one that does not wait (marking it
/// expired when its time ran out).
async fn waiting(app: &App, record: &DeploymentRecord) -> Result<PromotionWait, DecisionError> {
    let id = record.id;
    let wait = app.store.promotion_wait(id).await?.ok_or(DecisionError::NoneWaiting(id))?;
    let now = now_ms();
    match wait.status_at(now) {
        PromotionStatus::WaitingConfirmation => Ok(wait),
        PromotionStatus::Expired => {
            let (from, to) = (PromotionStatus::WaitingConfirmation, PromotionStatus::Expired);
            app.store.set_promotion_status(id, from, to, None, now).await?;
            Err(DecisionError::NotWaiting { id, status: PromotionStatus::Expired })
        }
        status => Err(DecisionError::NotWaiting { id, status }),
    }
}

/// A person (`by`, already authorized for the deployment's team) confirms deployment
/// `record`'s waiting promotion: its deployment of the next unit is started at once, requested
/// by them. The next unit busy or refusing leaves the promotion waiting. Answers the promoted
/// deployment's id.
pub async fn confirm(app: &App, record: &DeploymentRecord, by: &str) -> Result<i64, DecisionError> {
    let id = record.id;
    let wait = waiting(app, record).await?;
    let (waits, confirmed) = (PromotionStatus::WaitingConfirmation, PromotionStatus::Confirmed);
    if !app.store.set_promotion_status(id, waits, confirmed, Some(by), now_ms()).await? {
        let status = app.store.promotion_wait(id).await?.map_or(confirmed, |w| w.status);
        return Err(DecisionError::NotWaiting { id, status });
    }
    let target = (record.team.clone(), wait.to_application.clone(), wait.to_environment.clone());
    let launched = launch(app, record, &target, by).await;
    // The next unit busy or refusing: the promotion waits again, for another confirmation.
    let back = || app.store.set_promotion_status(id, confirmed, waits, None, now_ms());
    match launched {
        Ok(Launch::Started(promoted)) => {
            app.store.set_promotion_status(id, confirmed, PromotionStatus::Started, None, now_ms()).await?;
            tracing::info!(deployment = id, promoted, by, "promotion confirmed");
            Ok(promoted)
        }
        Ok(Launch::Busy(why)) => {
            back().await?;
            Err(DecisionError::Busy(why))
        }
        Ok(Launch::Refused(why)) => {
            back().await?;
            Err(DecisionError::Refused(why))
        }
        Err(e) => {
            // Best effort: a store that failed may refuse this too (then it stays `confirmed`).
            let _ = back().await;
            Err(e.into())
        }
    }
}

/// A person (`by`, authorized) declines deployment `record`'s waiting promotion: the chain
/// stops there.
pub async fn decline(app: &App, record: &DeploymentRecord, by: &str) -> Result<(), DecisionError> {
    let id = record.id;
    waiting(app, record).await?;
    let (waits, declined) = (PromotionStatus::WaitingConfirmation, PromotionStatus::Declined);
    if !app.store.set_promotion_status(id, waits, declined, Some(by), now_ms()).await? {
        let status = app.store.promotion_wait(id).await?.map_or(declined, |w| w.status);
        return Err(DecisionError::NotWaiting { id, status });
    }
    tracing::info!(deployment = id, by, "promotion declined");
    Ok(())
}

/// Where deployment `record`'s promotion stands, as the API shows it: a promotion that waits or
/// waited for a person, or one started by itself; `None` when it promoted nothing (yet).
pub async fn view(
    app: &App,
    record: &DeploymentRecord,
) -> Result<Option<crate::wire::Promotion>, StoreError> {
    let id = record.id;
    let promoted = app.store.promoted_to(id).await?;
    let at = |ms: i64| crate::wire::rfc3339(ms);
    if let Some(wait) = app.store.promotion_wait(id).await? {
        let mut status = wait.status_at(now_ms());
        if status == PromotionStatus::Confirmed && promoted.is_some() {
            status = PromotionStatus::Started;
        }
        let waits = status == PromotionStatus::WaitingConfirmation;
        let link = |order: &str| waits.then(|| format!("/v1/deployments/{id}/promotion/{order}"));
        return Ok(Some(crate::wire::Promotion {
            to: format!("{}/{}", wait.to_application, wait.to_environment),
            status,
            deployment: promoted,
            expires_at: waits.then(|| at(wait.expires_ms)),
            decided_by: wait.decided_by.clone(),
            decided_at: wait.decided_ms.filter(|_| !waits).map(at),
            confirm: link("confirm"),
            decline: link("decline"),
        }));
    }
    let Some(promoted) = promoted else { return Ok(None) };
    let Some(next) = app.store.get(promoted).await? else { return Ok(None) };
    Ok(Some(crate::wire::Promotion {
        to: format!("{}/{}", next.application, next.environment),
        status: PromotionStatus::Started,
        deployment: Some(promoted),
        expires_at: None,
        decided_by: None,
        decided_at: None,
        confirm: None,
        decline: None,
    }))
}
