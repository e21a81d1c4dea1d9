//! The VM routes (issue 19): validate, check the rules and the directory, record, start the run,
//! read. Each answers 404 while `[vms]` is not configured. Authorization is the deployments':
//! a token's (or session's) teams and roles; another team's VM is 404 as if it did not exist.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use vesemir_core::provision::{FlavorName, Provision, VmName};
use vesemir_ldap::DirectoryError;

use super::run::{self, Start};
use super::{configured, naming, rules, view, Setup};
use crate::api::{ApiError, AppState};
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::store::vms::{NewVm, VmFilter, VmInserted, VmRow, VmStatus, VmUpdate};
use crate::vm_wire::{VmCreateRequest, VmFlavorList, VmFlavorView, VmList, VmView};
use crate::wire::{ErrorBody, StreamEvent};

/// How many default names (`owner-1`, `owner-2`...) are tried before giving up.
const MAX_DEFAULT_NAMES: u32 = 1000;

fn tokio_now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Creates a VM for a directory user: recorded as `creating` and built in the background.
#[utoipa::path(
    post, path = "/v1/vms", tag = "vms", operation_id = "create_vm",
    request_body(content = VmCreateRequest, content_type = "application/json",
        description = "The owner (a directory user), a flavor the requester's team may create (`GET /v1/vm-flavors`), and optionally the VM's name (a DNS label; default `OWNER-N`, the lowest free N)."),
    responses(
        (status = 202, description = "Accepted: the VM is recorded as `creating` and built in the background; follow its events", body = VmView),
        (status = 400, description = "Malformed JSON or an unknown field", body = ErrorBody),
        (status = 403, description = "The requester's team may not create this flavor (the problem names the flavors it may create), or the token deploys for no team", body = ErrorBody),
        (status = 404, description = "This server creates no VMs: `[vms]` is not configured", body = ErrorBody),
        (status = 409, description = "Another VM has this name, or the owner holds as many VMs as allowed (named in the problem, with how to free one)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "A field is invalid (an unknown flavor: the configured ones are listed; a name that is no DNS label; an empty owner), or the owner is not a user of the directory", body = ErrorBody),
        (status = 503, description = "The directory cannot be asked now, the database cannot be reached, or the server is stopping: retry later", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let setup = configured(&state.vms)?;
    if state.runner.is_closing() {
        return Err(ApiError::shutting_down());
    }
    crate::api::check_json(&headers)?;
    let body = body.map_err(|rejection| crate::api::body_error(&state, &rejection))?;
    let request: VmCreateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "(document)", e.to_string()))?;
    let flavor = flavor(setup, &request.flavor)?;
    let owner = request.owner.trim();
    if owner.is_empty() {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "owner",
            "is empty: give the directory user the VM is for",
        ));
    }
    let name = match &request.name {
        Some(name) => Some(VmName::new(name).map_err(|e| {
            ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "name",
                format!("{name:?} is not a VM name: {}", e.rule),
            )
        })?),
        None => None,
    };
    let allowed = rules::allow(&setup.rules, &principal, &flavor.name)
        .map_err(|rules::Refused(message)| ApiError::field(StatusCode::FORBIDDEN, "flavor", message))?;
    check_owner(setup, owner).await?;
    let owner = owner.to_owned();
    let new = {
        let (owner, team, flavor, requested_by) =
            (owner.clone(), allowed.team.clone(), flavor.name.clone(), principal.name.clone());
        let created_ms = now_ms();
        move |name: VmName| NewVm {
            name,
            owner: owner.clone(),
            team: team.clone(),
            flavor: flavor.clone(),
            requested_by: requested_by.clone(),
            created_ms,
        }
    };
    // Recording and starting run in a task of their own: a request timeout or a dropped
    // connection cannot cut them apart (a VM recorded `creating` that nothing builds).
    let admitted = state.clone();
    let limit = allowed.max_per_owner;
    let row = tokio::spawn(async move {
        let state = admitted;
        let row = match name {
            Some(name) => inserted(state.store.insert_vm(&new(name), Some(limit)).await, &owner, limit)?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "another VM has this name: choose another, or leave `name` out",
                    )
                })?,
            None => default_named(&state, &owner, limit, new).await?,
        };
        let setup = configured(&state.vms)?;
        let machine =
            Provision::create(row.name.clone(), flavor, setup.provisioning.config.clone(), tokio_now());
        run::spawn(
            &state.vms,
            setup,
            &state.store,
            Start { row: row.clone(), machine, mode: VmStatus::Creating, offset: 0 },
        );
        Ok::<_, ApiError>(row)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "recording a VM failed unexpectedly");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "recording the VM failed unexpectedly: retry")
    })??;
    Ok(accepted(setup, &row))
}

/// The flavor named `text`, or 422 listing the configured ones.
fn flavor(setup: &Setup, text: &str) -> Result<vesemir_core::provision::Flavor, ApiError> {
    let catalog = &setup.provisioning.driver.catalog.flavors;
    FlavorName::new(text).ok().and_then(|name| catalog.get(&name).cloned()).ok_or_else(|| {
        let known: Vec<&str> = catalog.keys().map(FlavorName::as_str).collect();
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "flavor",
            format!("{text:?} is not a flavor of this server: use one of {}", rules::list(&known)),
        )
    })
}

/// The owner must exist in the directory: 422 when not, 503 when it cannot be asked.
async fn check_owner(setup: &Setup, owner: &str) -> Result<(), ApiError> {
    match setup.directory.lookup(owner).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "owner",
            format!(
                "{owner:?} is not a user of the directory: give the username of a person who can sign in"
            ),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "looking up a VM's owner in the directory failed");
            let reason = match e {
                DirectoryError::Unavailable { .. } => "the directory cannot be reached",
                _ => "the directory refused the lookup",
            };
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{reason}, so the owner cannot be checked: retry later (the operators have the details in the server's log)"),
            ))
        }
    }
}

/// The inserted row; `None` when the name is in use; 409 at the owner's limit.
fn inserted(
    result: Result<VmInserted, crate::StoreError>,
    owner: &str,
    limit: u32,
) -> Result<Option<VmRow>, ApiError> {
    match result.map_err(|e| ApiError::store(&e))? {
        VmInserted::Inserted(row) => Ok(Some(row)),
        VmInserted::NameInUse(_) => Ok(None),
        VmInserted::OwnerAtLimit { held } => Err(ApiError::field(
            StatusCode::CONFLICT,
            "owner",
            format!(
                "{owner} holds {held} VMs, the most allowed ({limit}): destroy one first (`vesemir vm destroy NAME`; `GET /v1/vms?owner={owner}` lists them)"
            ),
        )),
    }
}

/// Records the VM under the lowest free default name `owner-N`.
async fn default_named(
    state: &AppState,
    owner: &str,
    limit: u32,
    new: impl Fn(VmName) -> NewVm,
) -> Result<VmRow, ApiError> {
    let base = naming::base_of(owner).ok_or_else(|| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
            format!("no VM name can be made of the owner {owner:?}: give one (a DNS label: lowercase letters, digits and '-')"),
        )
    })?;
    for n in 1..=MAX_DEFAULT_NAMES {
        let Some(name) = naming::candidate(&base, n) else { break };
        let taken = state.store.vm(&name).await.map_err(|e| ApiError::store(&e))?;
        if taken.is_some_and(|row| row.status.holds_resources()) {
            continue;
        }
        if let Some(row) = inserted(state.store.insert_vm(&new(name), Some(limit)).await, owner, limit)? {
            return Ok(row);
        }
    }
    Err(ApiError::field(StatusCode::CONFLICT, "name", format!("no free name {base}-N was found: give one")))
}

/// 202 with the VM's `Location` and view.
fn accepted(setup: &Setup, row: &VmRow) -> Response {
    let view = view_of(setup, row);
    let mut response = (StatusCode::ACCEPTED, Json(&view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&view.links.self_) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

fn view_of(setup: &Setup, row: &VmRow) -> VmView {
    view::of(row, &setup.provisioning.config.zone, setup.provisioning.login_user.as_deref())
}

/// Filters of the VM list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VmListParams {
    /// Only this owner's.
    pub owner: Option<String>,
    /// Only this team's (a team token sees only its own teams').
    pub team: Option<String>,
    /// Only in this status.
    #[param(value_type = Option<VmStatus>)]
    pub status: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500, example = 50)]
    pub limit: Option<i64>,
}

/// VMs, newest first: a team's own, every team's for an admin.
#[utoipa::path(
    get, path = "/v1/vms", tag = "vms", operation_id = "list_vms",
    params(VmListParams),
    responses(
        (status = 200, description = "The VMs, newest first", body = VmList),
        (status = 400, description = "An unknown or malformed parameter", body = ErrorBody),
        (status = 403, description = "A team whose VMs the token does not read", body = ErrorBody),
        (status = 404, description = "This server creates no VMs: `[vms]` is not configured", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    params: Result<Query<VmListParams>, QueryRejection>,
) -> Result<Json<VmList>, ApiError> {
    let setup = configured(&state.vms)?;
    let Query(params) =
        params.map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "(query)", e.body_text()))?;
    let status = match &params.status {
        None => None,
        Some(text) => Some(VmStatus::parse(text).ok_or_else(|| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                "status",
                format!("{text:?} is not one of creating, ready, failed, cancelled, destroying, destroyed, interrupted"),
            )
        })?),
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "limit", "must be between 1 and 500"));
    }
    let teams: Vec<Option<String>> = match (principal.readable_teams(), &params.team) {
        (None, team) => vec![team.clone()],
        (Some(own), Some(asked)) if !own.contains(&asked.as_str()) => {
            return Err(ApiError::field(
                StatusCode::FORBIDDEN,
                "team",
                format!("{} does not read team {asked:?}'s VMs", principal.name),
            ))
        }
        (Some(_), Some(asked)) => vec![Some(asked.clone())],
        (Some(own), None) => own.into_iter().map(|t| Some(t.to_owned())).collect(),
    };
    let mut rows = Vec::new();
    for team in teams {
        let filter = VmFilter { owner: params.owner.clone(), team, status, limit };
        rows.extend(state.store.list_vms(&filter).await.map_err(|e| ApiError::store(&e))?);
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.id));
    rows.dedup_by_key(|r| r.id);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Json(VmList { vms: rows.iter().map(|row| view_of(setup, row)).collect() }))
}

/// The flavors the requester's team may create, and the owner limit of its creates.
#[utoipa::path(
    get, path = "/v1/vm-flavors", tag = "vms", operation_id = "vm_flavors",
    responses(
        (status = 200, description = "The flavors the requester's teams may create (none for a token that may create none)", body = VmFlavorList),
        (status = 404, description = "This server creates no VMs: `[vms]` is not configured", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn flavors(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<VmFlavorList>, ApiError> {
    let setup = configured(&state.vms)?;
    let catalog = &setup.provisioning.driver.catalog.flavors;
    let flavors = rules::flavors_of(&setup.rules, &principal)
        .iter()
        .filter_map(|name| FlavorName::new(name).ok().and_then(|name| catalog.get(&name)))
        .map(|flavor| VmFlavorView {
            name: flavor.name.to_string(),
            cores: flavor.size.cores,
            memory_mib: flavor.size.memory_mib,
            disk_gib: flavor.size.disk_gib,
        })
        .collect();
    Ok(Json(VmFlavorList { flavors, max_per_owner: rules::max_per_owner_of(&setup.rules, &principal) }))
}

/// What a handler does with a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Order,
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no VM {name:?}"))
}

/// The VM `name`, if `principal` may see it (another team's is 404), and give it orders
/// (a reader's order is 403).
async fn load(
    state: &AppState,
    principal: &Principal,
    name: Result<Path<String>, PathRejection>,
    access: Access,
) -> Result<VmRow, ApiError> {
    let Path(text) = name.map_err(|_| not_found("?"))?;
    let name = VmName::new(&text).map_err(|_| not_found(&text))?;
    let row =
        state.store.vm(&name).await.map_err(|e| ApiError::store(&e))?.ok_or_else(|| not_found(&text))?;
    if !principal.may_read(&row.team) {
        return Err(not_found(&text));
    }
    if access == Access::Order && !principal.may_deploy_for(&row.team) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} may read VM {name} but not give it orders (no deploy role)", principal.name),
        ));
    }
    Ok(row)
}

/// One VM: where it stands, its DNS name and how to log in once ready, why it failed, what to
/// do next.
#[utoipa::path(
    get, path = "/v1/vms/{name}", tag = "vms", operation_id = "get_vm",
    params(("name" = String, Path, description = "The VM's name")),
    responses(
        (status = 200, description = "The VM", body = VmView),
        (status = 404, description = "No such VM, another team's (as if it did not exist), or `[vms]` is not configured", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<VmView>, ApiError> {
    let setup = configured(&state.vms)?;
    let row = load(&state, &principal, name, Access::Read).await?;
    Ok(Json(view_of(setup, &row)))
}

/// A VM's events as server-sent events (`provision`, id = its number, data = the event as
/// JSON): the stored ones after `Last-Event-ID`, then live ones until its create or destroy
/// has ended. A destroy's events follow its create's on the same stream.
#[utoipa::path(
    get, path = "/v1/vms/{name}/events", tag = "vms", operation_id = "vm_events",
    params(
        ("name" = String, Path, description = "The VM's name"),
        ("Last-Event-ID" = Option<u64>, Header, minimum = 0, maximum = 9223372036854775807_i64, description = "Replay only events after this number"),
    ),
    responses(
        (status = 200, description = "text/event-stream of the VM's events", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "A malformed Last-Event-ID", body = ErrorBody),
        (status = 404, description = "No such VM, another team's (as if it did not exist), or `[vms]` is not configured", body = ErrorBody),
        (status = 429, description = "The token has `limits.max_event_streams_per_token` event streams open already (named in the problem)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    configured(&state.vms)?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| {
                ApiError::field(StatusCode::BAD_REQUEST, "Last-Event-ID", "must be an event's number")
            })?,
    };
    let row = load(&state, &principal, name, Access::Read).await?;
    // Subscribed before the replay reads anything: nothing falls between.
    let live = state.vms.running(row.id).map(|running| running.subscribe());
    let cap = state.limits.max_event_streams_per_token;
    let slot = state.streams.open(&principal.name, cap).map_err(|open| {
        ApiError::field(
            StatusCode::TOO_MANY_REQUESTS,
            "limits.max_event_streams_per_token",
            format!(
                "{} has {open} event streams open, the cap (limits.max_event_streams_per_token = {cap}): close one first",
                principal.name
            ),
        )
    })?;
    let stream = futures_util::StreamExt::map(
        super::stream::follow(state.store.clone(), row.id, row.name.clone(), after, live),
        move |event| {
            let _counted = &slot;
            event
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Cancels a VM's create: the step in flight ends, then every step done is undone.
#[utoipa::path(
    post, path = "/v1/vms/{name}/cancel", tag = "vms", operation_id = "cancel_vm",
    params(("name" = String, Path, description = "The VM's name")),
    responses(
        (status = 202, description = "Cancel asked: the create undoes what it did and ends `cancelled`", body = VmView),
        (status = 403, description = "A VM the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such VM, another team's (as if it did not exist), or `[vms]` is not configured", body = ErrorBody),
        (status = 409, description = "The VM is not being created, or its create runs on another server instance (named)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let setup = configured(&state.vms)?;
    let row = load(&state, &principal, name, Access::Order).await?;
    if row.status != VmStatus::Creating {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("VM {} is {}: only a VM being created can be cancelled", row.name, row.status),
        ));
    }
    match state.vms.running(row.id).filter(|running| running.mode() == VmStatus::Creating) {
        Some(running) => running.cancel(),
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "VM {} is being created by server instance {}, not this one ({}): cancel it there",
                    row.name,
                    row.instance,
                    state.store.instance()
                ),
            ))
        }
    }
    Ok(accepted(setup, &row))
}

/// Destroys a VM: every part taken down (domain, disk, Chef node and client, DNS records, the
/// address), its events following its create's on the same stream.
#[utoipa::path(
    delete, path = "/v1/vms/{name}", tag = "vms", operation_id = "destroy_vm",
    params(("name" = String, Path, description = "The VM's name")),
    responses(
        (status = 202, description = "Accepted: the VM is `destroying`; follow its events", body = VmView),
        (status = 403, description = "A VM the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such VM, another team's (as if it did not exist), or `[vms]` is not configured", body = ErrorBody),
        (status = 409, description = "The VM is being created (cancel it first), being destroyed, already destroyed, has nothing built to take down, or another order changed it first", body = ErrorBody),
        (status = 503, description = "The database cannot be reached, or the server is stopping: retry later", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn destroy(
    State(state): State<AppState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let setup = configured(&state.vms)?;
    if state.runner.is_closing() {
        return Err(ApiError::shutting_down());
    }
    // One order at a time on this instance: two destroys of one VM never both start.
    let _order = state.vms.orders.lock().await;
    let row = load(&state, &principal, name, Access::Order).await?;
    let conflict = |message: String| Err(ApiError::new(StatusCode::CONFLICT, message));
    let machine = match (row.status, &row.record) {
        (VmStatus::Creating, _) => {
            return conflict(format!(
                "VM {} is being created: cancel it first (POST /v1/vms/{}/cancel), then destroy what is left",
                row.name, row.name
            ))
        }
        (VmStatus::Destroying, _) => return conflict(format!("VM {} is being destroyed already", row.name)),
        (VmStatus::Destroyed, _) => return conflict(format!("VM {} is destroyed already", row.name)),
        (_, Some(record)) => {
            Provision::destroy(record.clone(), setup.provisioning.config.clone(), tokio_now())
        }
        (status, None) => {
            let parts_left = row.outcome.as_ref().is_some_and(|o| !o.left_behind().is_empty());
            let built = if status == VmStatus::Interrupted || parts_left {
                built_from_events(&state, setup, &row).await?
            } else {
                None
            };
            match built {
                Some(Built::Whole(record)) => {
                    Provision::destroy(record, setup.provisioning.config.clone(), tokio_now())
                }
                Some(Built::Parts(parts)) => {
                    Provision::destroy_parts(parts, setup.provisioning.config.clone(), tokio_now())
                }
                None => {
                    let next = view_of(setup, &row).next.unwrap_or_default();
                    return conflict(format!(
                        "VM {} ({status}) has nothing built to take down: {next}",
                        row.name
                    ));
                }
            }
        }
    };
    // Recording and starting run in a task of their own: a request timeout or a dropped
    // connection cannot cut them apart (a VM recorded `destroying` that nothing destroys).
    let ordered = state.clone();
    let row = tokio::spawn(async move {
        let state = ordered;
        let offset = last_seq(&state, row.id).await?;
        let update = VmUpdate {
            status: VmStatus::Destroying,
            placement: None,
            record: None,
            outcome: None,
            finished_ms: None,
        };
        // Only from the status it was read in: a destroy sent to another instance at the same
        // moment starts once.
        let moved = state.store.update_vm_from(row.id, row.status, &update).await.map_err(|e| ApiError::store(&e))?;
        if !moved {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("VM {} changed while this destroy was ordered (another order came first): see GET /v1/vms/{}", row.name, row.name),
            ));
        }
        let row = VmRow { status: VmStatus::Destroying, instance: state.store.instance().to_string(), ..row };
        let setup = configured(&state.vms)?;
        run::spawn(
            &state.vms,
            setup,
            &state.store,
            Start { row: row.clone(), machine, mode: VmStatus::Destroying, offset },
        );
        Ok::<_, ApiError>(row)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "starting a VM's destroy failed unexpectedly");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "starting the destroy failed unexpectedly: retry")
    })??;
    Ok(accepted(setup, &row))
}

/// What a destroy takes down, as a VM's create events say it was built.
enum Built {
    /// Everything a built VM has (SSH answered: its host key is known).
    Whole(vesemir_core::provision::VmRecord),
    /// What a create that never ended started (no host key: SSH never answered).
    Parts(vesemir_core::provision::PartsBuilt),
}

/// What a destroy needs, as the VM's create events say it was built: its name, DNS name and
/// flavor (`started`), its placement (the row's, else `placed`, else the reservation held),
/// the steps that started, its host key (`host_key_recorded`), the Chef environment and run
/// list of the configuration. `None` when no create event was stored and no reservation is
/// held: nothing was built.
async fn built_from_events(state: &AppState, setup: &Setup, row: &VmRow) -> Result<Option<Built>, ApiError> {
    use vesemir_core::provision::{Fqdn, PartsBuilt, ProvisionEventKind, Step, VmRecord};
    let (mut started, mut placement, mut host_key) = (None, row.placement.clone(), None);
    let mut steps: Vec<Step> = Vec::new();
    let mut last = 0;
    loop {
        let page = state.store.vm_events_after(row.id, last, 1000).await.map_err(|e| ApiError::store(&e))?;
        let Some(end) = page.last() else { break };
        last = end.seq;
        for event in page {
            match event.kind {
                ProvisionEventKind::Started { fqdn, flavor, .. } if started.is_none() => {
                    started = Some((fqdn, flavor))
                }
                ProvisionEventKind::StepStarted { step } if !steps.contains(&step) => steps.push(step),
                ProvisionEventKind::Placed { placement: placed } if placement.is_none() => {
                    placement = Some(placed)
                }
                ProvisionEventKind::HostKeyRecorded { key, .. } => host_key = Some(key),
                _ => {}
            }
        }
    }
    let held = state.store.vm_reservations().await.map_err(|e| ApiError::store(&e))?;
    let reservation = held.into_iter().find(|r| r.vm == row.name);
    if reservation.is_some() && !steps.contains(&Step::Reserve) {
        // Reserved, though the event saying the step started was not stored before the stop.
        steps.push(Step::Reserve);
    }
    if placement.is_none() {
        placement = reservation.map(|r| r.placement);
    }
    let environment = setup.provisioning.config.environment.clone();
    let run_list = setup.provisioning.config.run_list.clone();
    let (fqdn, flavor) = match started {
        Some(started) => started,
        None if steps.is_empty() => return Ok(None),
        // A reservation without any event: the VM's name and flavor are the row's.
        None => {
            let Some(flavor) = setup.provisioning.driver.catalog.flavors.get(&row.flavor).cloned() else {
                return Ok(None);
            };
            (Fqdn::new(row.name.clone(), setup.provisioning.config.zone.clone()), flavor)
        }
    };
    Ok(Some(match (placement, host_key) {
        (Some(placement), Some(host_key)) => Built::Whole(VmRecord {
            vm: row.name.clone(),
            fqdn,
            flavor,
            placement,
            host_key,
            environment,
            run_list,
        }),
        (placement, _) => Built::Parts(PartsBuilt {
            vm: row.name.clone(),
            fqdn,
            flavor,
            placement,
            started: steps,
            environment,
            run_list,
        }),
    }))
}

/// The number of VM row `id`'s last stored event (0 when none).
async fn last_seq(state: &AppState, id: i64) -> Result<u64, ApiError> {
    let mut last = 0;
    loop {
        let page = state.store.vm_events_after(id, last, 1000).await.map_err(|e| ApiError::store(&e))?;
        match page.last() {
            Some(event) => last = event.seq,
            None => return Ok(last),
        }
    }
}
