//! The HTTP API under `/v1`: handlers validate, persist, start the runner and read. No rollout
//! decision lives here.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use vesemir_core::request::spec::RequestSpec;
use vesemir_core::request::{
    InlineChangesets, Playbooks, RawQueries, RequestPolicy, Targets, ValidationErrors,
};
use vesemir_core::PrepareError;

use crate::auth::{Principal, Tokens};
use crate::catalog::{Catalog, Denied};
use crate::clock::now_ms;
use crate::config::Limits;
use crate::followup::FollowUpError;
use crate::journal::{RecoverError, Recoveries};
use crate::metrics::Metrics;
use crate::ports::PortsFactory;
use crate::runner::{ResumeRefused, Runner, SubmitError, Submitted};
use crate::store::{DeploymentRecord, ListFilter, Status, Store, StoreError};
use crate::wire::{Accepted, Deployment, DeploymentList, ErrorBody, Health, Problem, RecoveryReport};
use vesemir_core::journal::RecoveryConfig;

/// Everything the handlers share.
pub struct App {
    /// Where deployments, host results and events are stored.
    pub store: Arc<dyn Store>,
    /// Deployments in flight.
    pub runner: Arc<Runner>,
    /// Configured tokens.
    pub tokens: Tokens,
    /// Configured playbooks.
    pub playbooks: Playbooks,
    /// The operator's catalog: what each team may deploy.
    pub catalog: Catalog,
    /// Makes ports for each deployment.
    pub factory: Arc<dyn PortsFactory>,
    /// The configured bounds on bodies, queue, concurrency and time.
    pub limits: Limits,
    /// The server's Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The OpenAPI description served at `/openapi.json`, built once from the route table.
    pub openapi: Arc<serde_json::Value>,
    /// Deployments being recovered now (one recovery per deployment at a time).
    pub recoveries: Arc<Recoveries>,
    /// Event streams open now, per token (`limits.max_event_streams_per_token`).
    pub streams: Arc<crate::limits::EventStreams>,
    /// The catalog's CI hooks, with their secrets (issue 18).
    pub hooks: Arc<crate::hooks::Hooks>,
    /// Where each unit's successful versions go next (issue 18).
    pub promotions: Arc<crate::promotion::Promotions>,
    /// The units' outgoing webhooks (issue 18): a promotion waiting for a person is told here.
    pub notifier: Arc<crate::notify::Notifier>,
    /// The VMs this server provisions (issue 19), and their runs on this instance.
    pub vms: Arc<crate::vms::Vms>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store)
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

/// The shared state handlers receive.
pub type AppState = Arc<App>;

/// An error answer: a status and an [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Box<ErrorBody>,
    /// Sent as `Retry-After` (whole seconds) when set.
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, as the answer says it.
    pub(crate) fn detail(&self) -> &str {
        &self.body.detail
    }

    /// Every error answer is made here or in [`problems`](Self::problems): server paths are
    /// hidden from the caller ([`crate::server_paths`]).
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self::problems(status, &error.into(), Vec::new())
    }

    fn problems(status: StatusCode, error: &str, mut problems: Vec<Problem>) -> Self {
        for problem in &mut problems {
            problem.message = crate::server_paths::hidden(&problem.message);
        }
        let detail = crate::server_paths::hidden(error);
        Self {
            status,
            body: Box::new(ErrorBody { problems, ..ErrorBody::new(status, detail) }),
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`: the server is stopping and admits nothing ([`crate::shutdown`]).
    pub(crate) fn shutting_down() -> Self {
        Self {
            retry_after: Some(crate::shutdown::RETRY_AFTER),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, SubmitError::ShuttingDown.to_string())
        }
    }

    /// [`shutting_down`](Self::shutting_down) once admissions are closed.
    fn unless_closing(state: &App) -> Result<(), Self> {
        if state.runner.is_closing() {
            return Err(Self::shutting_down());
        }
        Ok(())
    }

    pub(crate) fn field(status: StatusCode, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let problem = Problem { field: field.to_owned(), message: message.clone() };
        Self::problems(status, &format!("{field}: {message}"), vec![problem])
    }

    fn validation(status: StatusCode, errors: &ValidationErrors) -> Self {
        let problems = errors
            .errors()
            .iter()
            .map(|e| Problem { field: e.field.clone(), message: e.message.clone() })
            .collect();
        Self::problems(status, &errors.to_string(), problems)
    }

    /// 422 for a fleet whose real state refuses the deployment: one problem per server.
    pub(crate) fn refused(error: &PrepareError) -> Self {
        let problems = match error {
            PrepareError::NotInRotation { servers } => servers
                .iter()
                .map(|s| Problem {
                    field: "load_balancer.servers_not_in_rotation".to_owned(),
                    message: format!("not in rotation: {s}"),
                })
                .collect(),
            PrepareError::Budget { budget } => budget
                .already_out
                .iter()
                .map(|s| Problem {
                    field: "strategy.concurrency".to_owned(),
                    message: format!(
                        "already out of rotation, counted against concurrency {}: {}: {}",
                        budget.concurrency,
                        s.name,
                        s.describe()
                    ),
                })
                .collect(),
            PrepareError::AddressMismatch { mismatches } => mismatches
                .iter()
                .map(|m| Problem { field: "targets".to_owned(), message: m.to_string() })
                .collect(),
            other => vec![Problem { field: "(document)".to_owned(), message: other.to_string() }],
        };
        Self::problems(StatusCode::UNPROCESSABLE_ENTITY, &format!("nothing was changed: {error}"), problems)
    }

    pub(crate) fn store(error: &StoreError) -> Self {
        tracing::error!(error = %error, "database failure");
        if error.is_unavailable() {
            // This instance cannot reach the database now (a split, a database that stalls):
            // answered at once, never after a hang; another instance may well answer.
            return Self {
                retry_after: Some(DATABASE_RETRY_AFTER),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database does not answer this server now (it cannot be reached, or did not answer in time): retry later, or through another server",
                )
            };
        }
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the database failed: retry later, and tell the operators if it lasts",
        )
    }

    /// The answer to a request the catalog turned down.
    pub(crate) fn denied(denied: &Denied) -> Self {
        match denied {
            Denied::Malformed(errors) => Self::validation(StatusCode::BAD_REQUEST, errors),
            Denied::Team(problem) | Denied::NotInCatalog(problem) => {
                Self::field(StatusCode::FORBIDDEN, &problem.field, problem.message.clone())
            }
            Denied::Invalid(errors) => Self::validation(StatusCode::UNPROCESSABLE_ENTITY, errors),
        }
    }

    fn not_found(id: i64) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no deployment {id}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = problem_response(self.status, &self.body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        // `problem_instance` reads it back to fill in the request's path.
        response.extensions_mut().insert(*self.body);
        response
    }
}

/// The `Retry-After` of a 503 for a database this server cannot reach ([`ApiError::store`]).
const DATABASE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `body` as an `application/problem+json` answer of `status`.
fn problem_response(status: StatusCode, body: &ErrorBody) -> Response {
    let json = serde_json::to_vec(body).unwrap_or_default();
    (status, [(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], json).into_response()
}

/// Completes every error answer: a problem gets the request's path as its `instance`, and the
/// router's own bodiless 405 becomes a problem too (its `Allow` header kept).
pub async fn problem_instance(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let problem = match response.extensions().get::<ErrorBody>() {
        Some(problem) => Some(problem.clone()),
        None if status == StatusCode::METHOD_NOT_ALLOWED => {
            Some(ErrorBody::new(status, format!("{path} does not answer this method: see the Allow header")))
        }
        None => None,
    };
    let Some(mut problem) = problem else { return response };
    problem.instance = Some(path);
    let (mut parts, _) = response.into_parts();
    let fresh = problem_response(status, &problem);
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, fresh.into_body())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no token: send the header \"Authorization: Bearer <token>\"",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "the Authorization header must be \"Bearer <token>\"")
            })?;
        state.tokens.authenticate(token).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this token is not known to the server: check it, or ask the operators for one",
            )
        })
    }
}

/// What a handler does with a deployment: read it, or give it an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read, list, follow.
    Read,
    /// Cancel, pause, resume, confirm, recover.
    Order,
}

/// Another team's deployment is not found (404, as if it did not exist); a deployment the
/// principal may only read refuses orders (403).
fn check_access(principal: &Principal, record: &DeploymentRecord, access: Access) -> Result<(), ApiError> {
    if !principal.may_read(&record.team) {
        return Err(ApiError::not_found(record.id));
    }
    if access == Access::Order && !principal.may_deploy_for(&record.team) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} may read deployment {} but not give it orders (no deploy role)",
                principal.name, record.id
            ),
        ));
    }
    Ok(())
}

fn parse_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    id.map(|Path(id)| id).map_err(|_| {
        ApiError::field(StatusCode::NOT_FOUND, "id", "is not a deployment id (a positive integer)")
    })
}

async fn load(
    state: &App,
    principal: &Principal,
    id: i64,
    access: Access,
) -> Result<DeploymentRecord, ApiError> {
    let record =
        state.store.get(id).await.map_err(|e| ApiError::store(&e))?.ok_or_else(|| ApiError::not_found(id))?;
    check_access(principal, &record, access)?;
    Ok(record)
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Starts a deployment.
#[utoipa::path(
    post, path = "/v1/deployments", tag = "deployments",
    request_body(content = crate::catalog::UnitRequest, content_type = "application/json",
        description = "The deployment request: a unit of the operator's catalog (team, application, environment), \
        a version, the unit's declared variables and a strategy within its limits. \
        `requested_by` is set by the server from the token's name: leave it out (a different value is refused). \
        Hosts, load balancers, sockets, Chef environments, raw queries and changesets are set by the operator: naming them is refused (422)."),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]*[!-~])?$",
        description = "The same key (per token) returns the same deployment: 1 to 200 visible ASCII characters.")),
    responses(
        (status = 202, description = "Accepted: the deployment runs in the background", body = Accepted),
        (status = 200, description = "This Idempotency-Key was used before with the same body: that deployment", body = Accepted),
        (status = 400, description = "Malformed JSON or an unknown field", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token does not deploy for this team, or the unit is not in the catalog", body = ErrorBody),
        (status = 409, description = "A deployment of this application and environment is queued or running: busy", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "The request is invalid (every problem, by field), refused by this server's configuration (an unknown playbook or variable, a `requested_by` that is not the token's name, an `Idempotency-Key` used with another body), or the fleet's real state refuses it: target servers not in rotation, no room left in the backend's out-of-rotation budget, a server with another address than its host (one problem per server)", body = ErrorBody),
        (status = 429, description = "The queue is full, or the team has its quota of deployments queued (`limits.max_queued_per_team`, named in the problem)", body = ErrorBody),
        (status = 503, description = "The server is shutting down: nothing is admitted; retry after `Retry-After` seconds (on this instance once it is back, or another)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ApiError::unless_closing(&state)?;
    check_json(&headers)?;
    let body = body.map_err(|rejection| body_error(&state, &rejection))?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::field(StatusCode::BAD_REQUEST, "(document)", "is not UTF-8 JSON"))?;
    let admitted =
        state.catalog.admit(text, &principal, &state.playbooks).map_err(|e| ApiError::denied(&e))?;
    let key = idempotency_key(&headers)?;
    let new = admitted.to_record(&principal.name, key, crate::auth::sha256_hex(&body)).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the request could not be encoded: {e}"))
    })?;
    let (request, secrets) = (admitted.request, admitted.secrets);
    let ports = ports_for(&state, &request)?;
    state.runner.precheck(&request, &ports).await.map_err(|e| ApiError::refused(&e))?;
    // Admission runs in its own task: a request timeout or a dropped connection cannot cut it
    // between storing the deployment and starting it.
    let runner = state.runner.clone();
    let submitted = tokio::spawn(async move {
        runner.submit_with(request, ports, new, crate::store::Origin::default(), secrets).await
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "admission task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "accepting the deployment failed unexpectedly: retry",
        )
    })?;
    submitted_response(submitted, &principal)
}

/// 415 unless the body is said to be JSON (`application/json`, or any `+json` type).
pub(crate) fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some(m) if m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")) => {
            Ok(())
        }
        other => Err(ApiError::field(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
            format!("is {}: send the request as application/json", other.unwrap_or("missing")),
        )),
    }
}

/// 413 for a body over the limit, 400 for any other unreadable body.
pub(crate) fn body_error(state: &App, rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::field(
            StatusCode::PAYLOAD_TOO_LARGE,
            "(document)",
            format!("the body is larger than {} bytes", state.limits.max_body_bytes),
        )
    } else {
        ApiError::field(StatusCode::BAD_REQUEST, "(document)", rejection.body_text())
    }
}

/// The ports for `request`. A configuration problem of the server is logged for the operators;
/// the caller learns only that the server cannot run it now (no server paths or settings).
pub(crate) fn ports_for(
    state: &App,
    request: &vesemir_core::request::DeploymentRequest,
) -> Result<vesemir_core::Ports, ApiError> {
    state.factory.ports(request).map_err(|e| match e {
        crate::ports::PortsError::Configuration { reason } => {
            tracing::error!(reason = %reason, "the server's adapter configuration failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server's adapters are not configured correctly: the operators have the details in the server's log",
            )
        }
        other => ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "(document)", other.to_string()),
    })
}

/// The `Idempotency-Key` header, if sent: 1 to 200 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let visible = |k: &str| k.bytes().all(|b| (b' '..=b'~').contains(&b));
    let key =
        value.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 200 && visible(k)).ok_or_else(|| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key",
                "must be 1 to 200 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// How the hosts are found, as stored and shown: the selector, or the listed hosts.
pub(crate) fn query_of(targets: &Targets) -> String {
    match targets {
        Targets::Search(selector) => selector.to_string(),
        Targets::Hosts(hosts) => {
            let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            format!("hosts {}", names.join(", "))
        }
    }
}

/// The answer to an admission: 202 with a `Location`, 200 for a repeated key, or the refusal.
fn submitted_response(
    submitted: Result<Submitted, SubmitError>,
    principal: &Principal,
) -> Result<Response, ApiError> {
    match submitted {
        Ok(Submitted::New(id)) => {
            let accepted = Accepted {
                id,
                status: Status::Queued,
                requested_by: principal.name.clone(),
                links: crate::wire::Links::of(id),
            };
            let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/v1/deployments/{id}")) {
                response.headers_mut().insert(LOCATION, location);
            }
            Ok(response)
        }
        Ok(Submitted::Existing(record)) => {
            Ok((StatusCode::OK, Json(Accepted::from_record(&record))).into_response())
        }
        Err(SubmitError::Conflict(running)) if principal.may_read(&running.team) => {
            let mut error =
                ApiError::new(StatusCode::CONFLICT, SubmitError::Conflict(running.clone()).to_string());
            error.body.running = Some(Accepted::from_record(&running));
            Err(error)
        }
        Err(SubmitError::Conflict(running)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} in {} is busy: another deployment is queued or running; try again when it ends",
                running.application, running.environment
            ),
        )),
        Err(e @ SubmitError::KeyReused(_)) => {
            Err(ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key", e.to_string()))
        }
        Err(e @ SubmitError::QueueFull(_)) => {
            Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()))
        }
        Err(e @ SubmitError::TeamQuota { .. }) => {
            Err(ApiError::field(StatusCode::TOO_MANY_REQUESTS, "limits.max_queued_per_team", e.to_string()))
        }
        Err(SubmitError::ShuttingDown) => Err(ApiError::shutting_down()),
        Err(SubmitError::Store(e)) => Err(ApiError::store(&e)),
    }
}

/// One deployment: status, per-host results, timings, who asked.
#[utoipa::path(
    get, path = "/v1/deployments/{id}", tag = "deployments",
    params(
        ("id" = i64, Path, description = "The deployment's id"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` of an earlier read: 304 while the deployment is unchanged"),
    ),
    responses(
        (status = 200, description = "The deployment", body = Deployment,
            headers(("ETag" = String, description = "A strong tag of this answer's bytes: send it as If-None-Match"))),
        (status = 304, description = "Unchanged since the read tagged by If-None-Match",
            headers(("ETag" = String, description = "The tag, unchanged"))),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let record = load(&state, &principal, id, Access::Read).await?;
    let hosts = state.store.hosts(id).await.map_err(|e| ApiError::store(&e))?;
    let mut view =
        Deployment::from_record(&record, &hosts, now_ms()).with_live(state.runner.view_state(&record));
    view.promotion = crate::promotion::view(&state, &record).await.map_err(|e| ApiError::store(&e))?;
    Ok(tagged(&headers, &view))
}

/// `view` as JSON with a strong `ETag` (a digest of the bytes), or 304 with no body when
/// `If-None-Match` names that tag (or is `*`).
fn tagged(headers: &HeaderMap, view: &Deployment) -> Response {
    let body = serde_json::to_vec(view).unwrap_or_default();
    let digest = crate::auth::sha256_hex(&body);
    let tag = format!("\"{}\"", &digest[..32]);
    let matches = headers.get_all(IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag.as_str()))
    });
    let etag = HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response();
    }
    (StatusCode::OK, [(ETAG, etag), (CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
        .into_response()
}

/// Filters and page of the deployment list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this application.
    pub application: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this team (a team token sees only its own).
    pub team: Option<String>,
    /// Only this status.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 200, example = 50)]
    pub limit: Option<i64>,
    /// Only deployments with an id below this: the cursor of the next page, which `next` gives
    /// (the last id of this page).
    #[param(minimum = 1, example = 120)]
    pub before: Option<i64>,
}

/// Deployments, newest first, filtered and paginated.
#[utoipa::path(
    get, path = "/v1/deployments", tag = "deployments",
    params(ListParams),
    responses(
        (status = 200, description = "A page of deployments, newest first. `next` is the next page's path \
            (`before` = the last id of this page, same filters and `limit`), or null on the last page", body = DeploymentList),
        (status = 400, description = "An unknown or malformed parameter", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A team whose deployments the token does not read", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<DeploymentList>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "(query)", e.body_text()))?;
    let status = match &params.status {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::field(
                StatusCode::BAD_REQUEST,
                "status",
                format!("{s:?} is not one of {}", all.join(", ")),
            )
        })?),
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "limit", "must be between 1 and 200"));
    }
    if params.before.is_some_and(|before| before < 1) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "before",
            "must be a deployment id (1 or more)",
        ));
    }
    // The teams listed: every team for an admin, else the ones the principal reads.
    let teams: Vec<Option<String>> = match (principal.readable_teams(), &params.team) {
        (None, team) => vec![team.clone()],
        (Some(own), Some(asked)) if !own.contains(&asked.as_str()) => {
            return Err(ApiError::field(
                StatusCode::FORBIDDEN,
                "team",
                format!("{} does not read team {asked:?}'s deployments", principal.name),
            ))
        }
        (Some(_), Some(asked)) => vec![Some(asked.clone())],
        (Some(own), None) => own.into_iter().map(|t| Some(t.to_owned())).collect(),
    };
    let mut records = Vec::new();
    for team in teams {
        let filter = ListFilter {
            application: params.application.clone(),
            environment: params.environment.clone(),
            team,
            status,
            before: params.before,
            limit: limit + 1,
        };
        records.extend(state.store.list(&filter).await.map_err(|e| ApiError::store(&e))?);
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.id));
    records.dedup_by_key(|r| r.id);
    let more = records.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let now = now_ms();
    let next = match (more, records.last()) {
        (true, Some(last)) => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("before", &last.id.to_string()).append_pair("limit", &limit.to_string());
            for (name, value) in [
                ("application", &params.application),
                ("environment", &params.environment),
                ("team", &params.team),
                ("status", &params.status),
            ] {
                if let Some(v) = value {
                    query.append_pair(name, v);
                }
            }
            Some(format!("/v1/deployments?{}", query.finish()))
        }
        _ => None,
    };
    let deployments = records
        .iter()
        .map(|r| Deployment::from_record(r, &[], now).with_live(state.runner.view_state(r)))
        .collect();
    Ok(Json(DeploymentList { deployments, next }))
}

/// A deployment's events as server-sent events: stored ones after `Last-Event-ID`, then live
/// ones until it ends. Each event's `id` is its sequence number, its `event` its type, its
/// `data` the event as JSON.
#[utoipa::path(
    get, path = "/v1/deployments/{id}/events", tag = "deployments",
    params(
        ("id" = i64, Path, description = "The deployment's id"),
        ("Last-Event-ID" = Option<u64>, Header, minimum = 0, maximum = 9223372036854775807_i64, description = "Replay only events after this sequence number"),
    ),
    responses(
        (status = 200, description = "text/event-stream of the deployment's events", content_type = "text/event-stream", body = crate::wire::StreamEvent),
        (status = 400, description = "A malformed Last-Event-ID", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 410, description = "The deployment's events were pruned (`limits.event_retention` after it ended); its record, hosts and summary remain", body = ErrorBody),
        (status = 429, description = "The token has `limits.max_event_streams_per_token` event streams open already (named in the problem)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "Last-Event-ID",
                    "must be an event's sequence number",
                )
            })?,
    };
    // Subscribe before reading anything, so nothing falls between replay and live.
    let live = state.runner.subscribe(id);
    let record = load(&state, &principal, id, Access::Read).await?;
    if crate::retention::pruned(&record, state.limits.event_retention, now_ms()) {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "the events of deployment {id} were pruned: this server keeps events for {} after a deployment ends (limits.event_retention); its record, hosts and summary remain at /v1/deployments/{id}",
                humantime::format_duration(state.limits.event_retention)
            ),
        ));
    }
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
    // The slot is given back when the stream ends or its client goes away.
    let stream = futures_util::StreamExt::map(
        crate::sse::follow(state.store.clone(), id, after, live),
        move |event| {
            let _counted = &slot;
            event
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Cancels a queued or running deployment: no new host starts, hosts in flight finish.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/cancel", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    responses(
        (status = 202, description = "Cancel asked: the deployment ends soon", body = Deployment),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 409, description = "The deployment has already ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let record = load(&state, &principal, id, Access::Order).await?;
    let cancelled = state.runner.cancel(id).await.map_err(|e| ApiError::store(&e))?;
    answer_order(&state, &principal, record, cancelled, "cancel", "cancel asked").await
}

/// Confirms the canary of a deployment waiting for it (`strategy.canary.confirm = true`): the
/// rest of the hosts go on. Confirming a deployment that is not waiting has no effect.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/confirm", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    responses(
        (status = 202, description = "Confirmed", body = Deployment),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 409, description = "The deployment has already ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn confirm(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let record = load(&state, &principal, id, Access::Order).await?;
    let confirmed = state.runner.confirm_anywhere(id).await.map_err(|e| ApiError::store(&e))?;
    answer_order(&state, &principal, record, confirmed, "confirm", "canary confirmed").await
}

/// The 202 answer to an order given to deployment `record` (cancel, confirm, pause), or 409 when
/// it could not be given because the deployment has ended (`verb` names the order).
async fn answer_order(
    state: &AppState,
    principal: &Principal,
    record: DeploymentRecord,
    given: bool,
    verb: &str,
    log: &str,
) -> Result<Response, ApiError> {
    let id = record.id;
    if !given {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("deployment {id} has already ended ({}): nothing to {verb}", record.status),
        ));
    }
    tracing::info!(deployment = id, by = %principal.name, "{log}");
    accepted_view(state, id, record).await
}

/// Puts back the servers a finished deployment's journal left out of rotation (interrupted by
/// a server stop, or failed out): each one that goes back into rotation passes its health gate
/// first (the request's health command, then UP on every load balancer instance at weight 0),
/// then returns to its original admin state and weight on every instance. A server that fails
/// its gate stays out, as found, and the answer says why. Not bounded by the request timeout.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/recover", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    responses(
        (status = 200, description = "What was done for each server the journal had left out", body = RecoveryReport),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 409, description = "The deployment is queued or running, kept no journal, or is being recovered", body = ErrorBody),
        (status = 422, description = "Its request no longer validates on this server, so its ports cannot be made", body = ErrorBody),
        (status = 503, description = "The server is shutting down: nothing is admitted; retry after `Retry-After` seconds (on this instance once it is back, or another)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn recover(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<RecoveryReport>, ApiError> {
    let id = parse_id(id)?;
    recover_servers(&state, &principal, id, None).await
}

/// Puts back the servers deployment `id` left out (only those of `only`'s hosts, when given),
/// each through its health gate.
async fn recover_servers(
    state: &AppState,
    principal: &Principal,
    id: i64,
    only: Option<std::collections::BTreeSet<vesemir_core::name::HostName>>,
) -> Result<Json<RecoveryReport>, ApiError> {
    ApiError::unless_closing(state)?;
    let record = load(state, principal, id, Access::Order).await?;
    if !record.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "deployment {id} is {}: cancel it, or wait for it to end, before recovering",
                record.status
            ),
        ));
    }
    let policy = RequestPolicy {
        playbooks: &state.playbooks,
        inline_changesets: InlineChangesets::Refused,
        raw_queries: RawQueries::Refused,
    };
    let request = RequestSpec::from_json(&record.request).and_then(|spec| spec.validate(&policy)).map_err(|e| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "(document)",
            format!("deployment {id}'s request no longer validates on this server, so its ports cannot be made: {e}"),
        )
    })?;
    let ports = ports_for(state, &request)?;
    let Some(guard) = state.recoveries.start(id) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("deployment {id} is being recovered already"),
        ));
    };
    let config = RecoveryConfig {
        up_timeout: request.changeset.health.load_balancer_up.unwrap_or(RecoveryConfig::default().up_timeout),
        call_timeout: state.limits.call_timeout,
    };
    tracing::info!(deployment = id, by = %principal.name, "recovery asked");
    // In its own task: a dropped connection cannot cut a server's recovery halfway.
    let store = state.store.clone();
    let recovered = tokio::spawn(async move {
        let _guard = guard;
        let output_limit = vesemir_core::DriverConfig::default().output_limit;
        crate::journal::recover_hosts(&*store, id, &ports, &request, &config, output_limit, only.as_ref())
            .await
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "recovery task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the recovery failed unexpectedly: see GET, then retry",
        )
    })?;
    match recovered {
        Ok(recovery) => Ok(Json(RecoveryReport::from_recovery(id, &recovery))),
        Err(e @ RecoverError::NoJournal(_)) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Err(RecoverError::Store(e)) => Err(ApiError::store(&e)),
    }
}

/// Puts back the servers a deployment left out of rotation, as `recover` does, only for the
/// hosts named (all of them with an empty body): each passes its health gate (the request's
/// health command, then UP on every instance at weight 0), then returns to its original admin
/// state and weight. A server that fails its gate stays out, and the answer says why. Not
/// bounded by the request timeout.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/restore", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    request_body(content = Option<crate::wire::RestoreBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "What was done for each server asked for", body = RecoveryReport),
        (status = 400, description = "Malformed body, or a host name that is not one", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 409, description = "The deployment is queued or running, kept no journal, or is being recovered", body = ErrorBody),
        (status = 422, description = "Its request no longer validates on this server, so its ports cannot be made", body = ErrorBody),
        (status = 503, description = "The server is shutting down: nothing is admitted; retry after `Retry-After` seconds (on this instance once it is back, or another)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn restore(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RecoveryReport>, ApiError> {
    let id = parse_id(id)?;
    let body: crate::wire::RestoreBody = optional_body(&state, body)?;
    let mut only = std::collections::BTreeSet::new();
    for host in &body.hosts {
        // The document gives `hosts` the host-name pattern: anything else is a malformed body.
        let name = vesemir_core::name::HostName::new(host)
            .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "hosts", e.to_string()))?;
        only.insert(name);
    }
    recover_servers(&state, &principal, id, (!only.is_empty()).then_some(only)).await
}

/// A JSON body of type `T`, or its default when the body is empty or `null`.
fn optional_body<T: serde::de::DeserializeOwned + Default>(
    state: &App,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| body_error(state, &rejection))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let malformed =
        |e: serde_json::Error| ApiError::field(StatusCode::BAD_REQUEST, "(document)", e.to_string());
    // `null` is no body, as the document's optional body allows; anything else must be an
    // object (serde would take an array for a struct's fields, which the document refuses).
    match serde_json::from_slice::<serde_json::Value>(&body).map_err(malformed)? {
        serde_json::Value::Null => Ok(T::default()),
        object @ serde_json::Value::Object(_) => serde_json::from_value(object).map_err(malformed),
        _ => Err(ApiError::field(StatusCode::BAD_REQUEST, "(document)", "must be a JSON object, or empty")),
    }
}

/// The answer to a follow-up: 202 with its `Location`, or why it was not started.
fn follow_up_response(
    started: Result<i64, FollowUpError>,
    principal: &Principal,
) -> Result<Response, ApiError> {
    match started {
        Ok(id) => submitted_response(Ok(Submitted::New(id)), principal),
        Err(FollowUpError::Submit(e)) => submitted_response(Err(e), principal),
        Err(FollowUpError::Store(e)) => Err(ApiError::store(&e)),
        Err(FollowUpError::Refused(e)) => Err(ApiError::refused(&e)),
        Err(FollowUpError::Invalid(_, e)) => Err(ApiError::validation(StatusCode::UNPROCESSABLE_ENTITY, &e)),
        Err(FollowUpError::SecretNotStored(parent, name)) => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("variables.{name}"),
            format!(
                "is secret and deployment {parent}'s value is not stored (only ***): give it in the body's variables to run it again"
            ),
        )),
        Err(e @ FollowUpError::Ports(_)) => {
            Err(ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "(document)", e.to_string()))
        }
        Err(
            e @ (FollowUpError::NotFinished(..)
            | FollowUpError::NothingToRetry(_)
            | FollowUpError::NoRollback(_)),
        ) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}

/// Starts a new deployment, linked to this one (`retry_of` in the history), over the hosts it
/// did not finish (failed, unreachable, skipped, cancelled), with the same request; the body may
/// change `concurrency` and `variables`. Servers it left out of rotation are taken as they are
/// (the budget counts them) and, once deployed, go back to the state it found them in.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/retry", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment to retry")),
    request_body(content = Option<crate::wire::RetryBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "The retry was accepted: a new deployment", body = Accepted),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 409, description = "It has not ended, every host succeeded, or another deployment of its application and environment runs", body = ErrorBody),
        (status = 422, description = "Its request, edited, no longer validates, or the fleet's real state refuses it", body = ErrorBody),
        (status = 429, description = "The queue is full, or the team has its quota of deployments queued (`limits.max_queued_per_team`, named in the problem)", body = ErrorBody),
        (status = 503, description = "The server is shutting down: nothing is admitted; retry after `Retry-After` seconds (on this instance once it is back, or another)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ApiError::unless_closing(&state)?;
    let id = parse_id(id)?;
    let body: crate::wire::RetryBody = optional_body(&state, body)?;
    let parent = load(&state, &principal, id, Access::Order).await?;
    tracing::info!(deployment = id, by = %principal.name, "retry asked");
    let started =
        crate::followup::retry(&state, &parent, body.concurrency, body.variables, &principal.name).await;
    follow_up_response(started, &principal)
}

/// The deployments of an application in an environment, newest first (at most 200), each
/// host's result, and the version each host last succeeded with.
#[utoipa::path(
    get, path = "/v1/applications/{application}/environments/{environment}/history", tag = "deployments",
    params(
        ("application" = String, Path, description = "The application"),
        ("environment" = String, Path, description = "The environment"),
    ),
    responses(
        (status = 200, description = "The history, newest first", body = crate::wire::History),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path((application, environment)): Path<(String, String)>,
) -> Result<Json<crate::wire::History>, ApiError> {
    let mut history = crate::followup::history(&*state.store, &application, &environment)
        .await
        .map_err(|e| ApiError::store(&e))?;
    // Another team's deployments are left out, as if they did not exist.
    history.retain(|(record, _)| principal.may_read(&record.team));
    let mut promotions = std::collections::BTreeMap::new();
    for (record, _) in history.iter().filter(|(record, _)| record.status == Status::Succeeded) {
        if let Some(promotion) =
            crate::promotion::view(&state, record).await.map_err(|e| ApiError::store(&e))?
        {
            promotions.insert(record.id.to_string(), promotion);
        }
    }
    let records = history.into_iter().map(|(_, r)| r).collect();
    let mut view = crate::wire::History::of(&application, &environment, records).without_server_paths();
    view.promotions = promotions;
    Ok(Json(view))
}

/// Deploys the previous version of an application in an environment: the newest one before the
/// current one that succeeded on every host (from the history), or `to`; the deployment whose
/// request ran that version is run again with it, linked to the newest one (`rollback_of`).
/// Servers the newest deployment left out are taken as they are and put back once deployed.
#[utoipa::path(
    post, path = "/v1/applications/{application}/environments/{environment}/rollback", tag = "deployments",
    params(
        ("application" = String, Path, description = "The application"),
        ("environment" = String, Path, description = "The environment"),
    ),
    request_body(content = Option<crate::wire::RollbackBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "The rollback was accepted: a new deployment", body = Accepted),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "The token may only read this application's deployments (no deploy role)", body = ErrorBody),
        (status = 404, description = "No deployment of it is recorded (none the token may read)", body = ErrorBody),
        (status = 409, description = "No version to roll back to, the newest deployment still runs, or another deployment of it runs", body = ErrorBody),
        (status = 422, description = "The request to run again no longer validates, or the fleet's real state refuses it", body = ErrorBody),
        (status = 503, description = "The server is shutting down: nothing is admitted; retry after `Retry-After` seconds (on this instance once it is back, or another)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rollback(
    State(state): State<AppState>,
    principal: Principal,
    Path((application, environment)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ApiError::unless_closing(&state)?;
    let body: crate::wire::RollbackBody = optional_body(&state, body)?;
    let to = match &body.to {
        Some(v) => Some(
            vesemir_core::name::Version::new(v)
                .map_err(|e| ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "to", e.to_string()))?,
        ),
        None => None,
    };
    let mut history = crate::followup::history(&*state.store, &application, &environment)
        .await
        .map_err(|e| ApiError::store(&e))?;
    // Another team's deployments are left out, as if they did not exist.
    history.retain(|(record, _)| principal.may_read(&record.team));
    let Some((newest, _)) = history.first() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no deployment of {application} in {environment} is recorded: nothing to roll back"),
        ));
    };
    check_access(&principal, newest, Access::Order)?;
    tracing::info!(%application, %environment, by = %principal.name, "rollback asked");
    let started = crate::followup::rollback(&state, &history, to.as_ref(), None, &principal.name).await;
    follow_up_response(started, &principal)
}

/// Pauses a queued or running deployment: no new host starts until it is resumed; hosts in
/// flight finish, and a canary waiting for confirmation keeps waiting. Pausing a paused
/// deployment changes nothing.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/pause", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    responses(
        (status = 202, description = "Paused", body = Deployment),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 409, description = "The deployment has already ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let record = load(&state, &principal, id, Access::Order).await?;
    let paused = state.runner.pause_anywhere(id).await.map_err(|e| ApiError::store(&e))?;
    answer_order(&state, &principal, record, paused, "pause", "paused").await
}

/// Resumes a paused deployment: hosts start again as the gates allow.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/resume", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    responses(
        (status = 202, description = "Resumed", body = Deployment),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 409, description = "The deployment is not paused, or has already ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let record = load(&state, &principal, id, Access::Order).await?;
    match state.runner.resume_anywhere(id).await.map_err(|e| ApiError::store(&e))? {
        Ok(()) => {}
        Err(ResumeRefused::NotPaused) => {
            return Err(ApiError::new(StatusCode::CONFLICT, format!("deployment {id} is not paused")));
        }
        Err(ResumeRefused::NotActive) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("deployment {id} has already ended ({}): nothing to resume", record.status),
            ));
        }
    }
    tracing::info!(deployment = id, by = %principal.name, "resumed");
    accepted_view(&state, id, record).await
}

/// 202 with the deployment as stored now (or as `record` said, if it vanished meanwhile).
async fn accepted_view(state: &App, id: i64, record: DeploymentRecord) -> Result<Response, ApiError> {
    let record = state.store.get(id).await.map_err(|e| ApiError::store(&e))?.unwrap_or(record);
    let hosts = state.store.hosts(id).await.map_err(|e| ApiError::store(&e))?;
    let mut view =
        Deployment::from_record(&record, &hosts, now_ms()).with_live(state.runner.view_state(&record));
    view.promotion = crate::promotion::view(state, &record).await.map_err(|e| ApiError::store(&e))?;
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/deployments/{id}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// Whether the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Whether the server can take requests (its database answers).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Not ready", body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.runner.is_closing() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "shutting down".into() }))
            .into_response();
    }
    match state.store.ping().await {
        Ok(()) => Json(Health { status: "ok".into() }).into_response(),
        Err(e) => {
            // The reason (which may name files and settings) goes to the operators' log only.
            tracing::error!(error = %e, "readiness: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "database not answering".into() }))
                .into_response()
        }
    }
}

/// Prometheus metrics: for admin tokens only (a scraper without one uses the separate
/// `metrics_listen` address of the configuration).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    if !principal.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "/metrics is for admin tokens; a scraper reads the server's metrics_listen address",
        ));
    }
    Ok(metrics_text(&state).await)
}

/// The metrics in Prometheus' text format, as `/metrics` and the metrics listener serve them:
/// this instance's, with the database's deployment counts read now (left as last read when
/// the database does not answer in time).
pub async fn metrics_text(state: &App) -> Response {
    let counts = tokio::time::timeout(state.limits.call_timeout, state.store.count_by_status()).await;
    match counts {
        Ok(Ok(counts)) => state.metrics.database_counts(&counts),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: counting the database's deployments failed"),
        Err(_) => {
            tracing::warn!("metrics: counting the database's deployments took longer than call_timeout")
        }
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// This API's OpenAPI description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    Json(state.openapi.as_ref()).into_response()
}

/// Gives the timeout layer's empty 408 a JSON body like every other error.
pub async fn timeout_body(response: Response) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request took longer than the server's request_timeout: retry",
        )
        .into_response()
    } else {
        response
    }
}

/// Any other path.
pub async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such path: see /openapi.json")
}

// ---- Issue 18: promotion by confirmation, and the notification delivery log ----

/// Confirms a deployment's promotion that waits for a person (`promote_confirm`): its version is
/// deployed to the next unit at once, requested by the caller. When the next unit is busy or
/// refuses it, nothing starts and the promotion keeps waiting.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/promotion/confirm", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment whose success waits to be promoted")),
    responses(
        (status = 202, description = "Confirmed: `promotion.deployment` is the next unit's deployment", body = Deployment),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 409, description = "No promotion waits (none, decided, superseded or expired), or the next unit is busy (it still waits)", body = ErrorBody),
        (status = 422, description = "The next unit refuses the version, or its fleet's real state refuses the deployment (it still waits)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
        (status = 503, description = "The server is shutting down: nothing is admitted; retry after `Retry-After` seconds", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn confirm_promotion(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    ApiError::unless_closing(&state)?;
    let id = parse_id(id)?;
    let record = load(&state, &principal, id, Access::Order).await?;
    crate::promotion::confirm(&state, &record, &principal.name).await.map_err(ApiError::decision)?;
    accepted_view(&state, id, record).await
}

/// Declines a deployment's promotion that waits for a person: the chain stops there.
#[utoipa::path(
    post, path = "/v1/deployments/{id}/promotion/decline", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment whose success waits to be promoted")),
    responses(
        (status = 202, description = "Declined", body = Deployment),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 403, description = "A deployment the token may only read (no deploy role)", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 409, description = "No promotion waits (none, decided, superseded or expired)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn decline_promotion(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let record = load(&state, &principal, id, Access::Order).await?;
    crate::promotion::decline(&state, &record, &principal.name).await.map_err(ApiError::decision)?;
    accepted_view(&state, id, record).await
}

/// The delivery log of a deployment's notifications (`[[units.notify]]`): every attempt, in
/// order, with the target's name (never its URL or secret), the event, the try, and the
/// receiver's status or what went wrong.
#[utoipa::path(
    get, path = "/v1/deployments/{id}/notifications", tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    responses(
        (status = 200, description = "Every delivery attempt, in the order made", body = crate::wire::NotificationLog),
        (status = 401, description = "No token, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such deployment, or another team's (as if it did not exist)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn notifications(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<crate::wire::NotificationLog>, ApiError> {
    let id = parse_id(id)?;
    load(&state, &principal, id, Access::Read).await?;
    let attempts = state.store.notifications(id).await.map_err(|e| ApiError::store(&e))?;
    Ok(Json(crate::wire::NotificationLog::of(id, &attempts)))
}

impl ApiError {
    /// The answer to a promotion that could not be confirmed or declined.
    fn decision(error: crate::promotion::DecisionError) -> Self {
        use crate::promotion::DecisionError;
        match &error {
            DecisionError::NoneWaiting(_) | DecisionError::NotWaiting { .. } | DecisionError::Busy(_) => {
                Self::new(StatusCode::CONFLICT, error.to_string())
            }
            DecisionError::Refused(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
            DecisionError::Store(e) => Self::store(e),
        }
    }
}
