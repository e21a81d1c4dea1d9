//! CI triggers: `POST /v1/hooks/{name}` starts a deployment of the unit a hook belongs to, when
//! the body is signed with the hook's shared secret.
//!
//! A hook is declared on its unit in the catalog; its secret lives in a file only the server's
//! user may read (refused otherwise, as ssh refuses such key files):
//!
//! ```toml
//! [[units.hooks]]
//! name = "shop-ci"                               # POST /v1/hooks/shop-ci
//! secret_file = "/etc/vesemir/hooks/shop-ci"     # mode 0600 or 0400
//! version = "/release/version"                   # a JSON pointer into the body
//! signature_header = "X-Hub-Signature-256"       # default X-Vesemir-Signature: "sha256=<hex>"
//! delivery_header = "X-GitHub-Delivery"          # default X-Vesemir-Delivery
//! timestamp = "/sent_at"                         # optional: Unix seconds or RFC 3339, in the body
//! max_age = "5m"                                 # how old (or early) that timestamp may be
//! when_busy = "queue"                            # or "reject" (409) while the unit deploys
//! ```
//!
//! A delivery is checked in this order, and nothing is read from the body before its signature
//! holds: the signature, HMAC-SHA256 of the raw body with the secret, compared in constant time
//! (an unknown hook's delivery is checked against a decoy key, so the answer takes as long: 404);
//! a missing or wrong signature is 401. Then the body as JSON (400), its timestamp within
//! `max_age` of now (401: a stale delivery is a replay), the delivery id (400 without one), the
//! version at the pointer and the unit's version pattern (422 naming both). Each delivery is
//! stored ([`Store::record_hook_delivery`](crate::store::Store::record_hook_delivery)), unique
//! per hook by its id and by its body: a delivery repeated (same id, or same signed body under
//! another id) answers the deployment it started (200), never a second one; the same id with
//! another body is 422. While the unit deploys, `when_busy = "queue"` keeps the delivery
//! waiting (202, `state = "waiting"`) and starts it once the unit is free (oldest first, on any
//! instance sharing the database); `"reject"` answers 409. The deployment is requested by
//! `hook:<name>`, with the unit's defaults. Secrets are never logged, stored or answered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vesemir_core::request::FieldError;

use crate::api::{ApiError, App, AppState};
use crate::auth::{Principal, PrincipalSource, Role};
use crate::catalog::UnitConfig;
use crate::clock::now_ms;
use crate::runner::{SubmitError, Submitted};
use crate::store::{HookRecorded, HookState, NewHookDelivery, Status};
use crate::wire::{Accepted, ErrorBody};

/// The signature header when a hook names none: `sha256=` and the hex HMAC-SHA256 of the body.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Vesemir-Signature";
/// The delivery id header when a hook names none.
pub const DEFAULT_DELIVERY_HEADER: &str = "X-Vesemir-Delivery";
/// How often waiting deliveries are looked at even when no deployment ended here (another
/// instance's may have).
const DISPATCH_EVERY: Duration = Duration::from_secs(2);
/// The shortest secret accepted, in bytes.
const MIN_SECRET_BYTES: usize = 16;

/// A CI hook of a unit (`[[units.hooks]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Its name in `POST /v1/hooks/{name}`: unique across the catalog; 1 to 64 of `a-z0-9._-`.
    pub name: String,
    /// The file holding the shared secret (surrounding whitespace ignored), readable by the
    /// server's user only.
    pub secret_file: PathBuf,
    /// A JSON pointer (RFC 6901) to the version in the body, e.g. `/release/version`.
    pub version: String,
    /// The header carrying the signature, `sha256=<hex>` (or the bare hex).
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// The header carrying the sender's delivery id.
    #[serde(default = "default_delivery_header")]
    pub delivery_header: String,
    /// A JSON pointer to the time the body was sent (Unix seconds, or RFC 3339): a delivery
    /// further than `max_age` from now is refused as a replay. Without one, only delivery ids
    /// and bodies already seen are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// How far from now the timestamp may be.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// What a delivery does while the unit deploys: wait its turn, or be refused (409).
    #[serde(default)]
    pub when_busy: WhenBusy,
}

fn default_signature_header() -> String {
    DEFAULT_SIGNATURE_HEADER.to_owned()
}

fn default_delivery_header() -> String {
    DEFAULT_DELIVERY_HEADER.to_owned()
}

fn default_max_age() -> Duration {
    Duration::from_secs(300)
}

/// What a hook's delivery does while its unit deploys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenBusy {
    /// Wait, and start once the unit is free (oldest delivery first).
    #[default]
    Queue,
    /// Refused with 409.
    Reject,
}

/// Checks the shape of every unit's hooks (names unique and well formed, pointers, headers,
/// `max_age`), every problem at once under `units[i].hooks[j]...`. The secret files are read
/// when the server opens ([`Hooks::load`]).
pub fn check(units: &[UnitConfig]) -> Vec<FieldError> {
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, unit) in units.iter().enumerate() {
        for (j, hook) in unit.hooks.iter().enumerate() {
            let at = format!("units[{i}].hooks[{j}]");
            let valid_name = !hook.name.is_empty()
                && hook.name.len() <= 64
                && hook
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !valid_name {
                problems.push(FieldError::new(
                    format!("{at}.name"),
                    "must be 1 to 64 of a-z, 0-9, '.', '_', '-'",
                ));
            } else if !names.insert(hook.name.clone()) {
                problems.push(FieldError::new(
                    format!("{at}.name"),
                    format!("repeats the hook {:?}: each name once in the catalog", hook.name),
                ));
            }
            for (field, pointer) in [("version", Some(&hook.version)), ("timestamp", hook.timestamp.as_ref())]
            {
                if let Some(pointer) = pointer {
                    if !pointer.starts_with('/') {
                        problems.push(FieldError::new(
                            format!("{at}.{field}"),
                            "must be a JSON pointer (RFC 6901) into the body, starting with '/', e.g. \"/version\"",
                        ));
                    }
                }
            }
            for (field, header) in
                [("signature_header", &hook.signature_header), ("delivery_header", &hook.delivery_header)]
            {
                if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    problems.push(FieldError::new(format!("{at}.{field}"), "must be an HTTP header name"));
                }
            }
            if hook.max_age.is_zero() || hook.max_age > Duration::from_secs(24 * 3600) {
                problems.push(FieldError::new(format!("{at}.max_age"), "must be above 0s and at most 24h"));
            }
        }
    }
    problems
}

/// A shared secret: never shown.
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(hidden)")
    }
}

/// What starts deployments of a unit through the deliveries' path: each delivery recorded in
/// the store first (unique per trigger by id and by body, on every instance sharing the
/// database), admitted like any request of its principal, and queued while the unit is busy
/// (or refused, as `when_busy` says). A CI hook is one; a unit's watched package source
/// ([`crate::source`]) is another.
#[derive(Debug, Clone)]
pub(crate) struct Trigger {
    /// Its name among the stored deliveries: the hook's name, or `source:TEAM/APPLICATION/ENVIRONMENT`
    /// (a hook's name holds no `:`).
    pub(crate) name: String,
    /// The unit's team.
    pub(crate) team: String,
    /// The unit's application.
    pub(crate) application: String,
    /// The unit's environment.
    pub(crate) environment: String,
    /// Who its deployments are requested by (`requested_by` in the history).
    pub(crate) principal: Principal,
    /// What a delivery does while the unit deploys.
    pub(crate) when_busy: WhenBusy,
    /// The field a delivery id reused with another deployment is reported against.
    pub(crate) id_field: String,
    /// Put before the delivery id to make the deployment's idempotency key.
    pub(crate) key_prefix: String,
}

/// A hook ready to check deliveries.
#[derive(Debug)]
struct Hook {
    config: HookConfig,
    trigger: Trigger,
    secret: Secret,
}

/// The catalog's hooks, with their secrets read.
#[derive(Debug)]
pub struct Hooks {
    by_name: HashMap<String, Hook>,
    /// The units' watched package sources, which start deployments through the same path.
    sources: Vec<Trigger>,
    /// The key an unknown hook's delivery is checked against, so that it costs the same.
    decoy: Secret,
    /// Wakes the dispatcher of waiting deliveries (a deployment ended).
    wake: tokio::sync::Notify,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            by_name: HashMap::new(),
            sources: Vec::new(),
            decoy: Secret(decoy_key()),
            wake: tokio::sync::Notify::new(),
        }
    }
}

/// A key nobody knows: a hash of this process's identity and start time.
fn decoy_key() -> Vec<u8> {
    let seed = format!("{}-{}-{:?}", std::process::id(), now_ms(), std::time::Instant::now());
    crate::auth::sha256_hex(seed.as_bytes()).into_bytes()
}

impl Hooks {
    /// Reads every hook's secret file: a file that cannot be read, is empty or shorter than 16
    /// bytes, or that its group or others may read, is a problem naming the hook's field (every
    /// problem at once). The paths are the operator's own configuration; no caller sees them.
    pub fn load(units: &[UnitConfig]) -> Result<Self, Vec<FieldError>> {
        let mut problems = Vec::new();
        let mut hooks = Self::default();
        for (i, unit) in units.iter().enumerate() {
            for (j, config) in unit.hooks.iter().enumerate() {
                let field = format!("units[{i}].hooks[{j}].secret_file");
                match read_secret(&config.secret_file).map(Secret) {
                    Ok(secret) => {
                        hooks.by_name.insert(
                            config.name.clone(),
                            Hook {
                                config: config.clone(),
                                trigger: Trigger {
                                    name: config.name.clone(),
                                    team: unit.team.clone(),
                                    application: unit.application.clone(),
                                    environment: unit.environment.clone(),
                                    principal: Principal {
                                        name: format!("hook:{}", config.name),
                                        source: PrincipalSource::Hook,
                                        teams: [unit.team.clone()].into(),
                                        roles: [Role::Deploy].into(),
                                    },
                                    when_busy: config.when_busy,
                                    id_field: config.delivery_header.clone(),
                                    key_prefix: "delivery ".to_owned(),
                                },
                                secret,
                            },
                        );
                    }
                    Err(message) => problems.push(FieldError::new(field, message)),
                }
            }
            hooks.sources.extend(crate::source::trigger(unit));
        }
        if problems.is_empty() {
            Ok(hooks)
        } else {
            Err(problems)
        }
    }

    /// Whether any hook (or watched source) is declared.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.sources.is_empty()
    }

    /// Looks at waiting deliveries now (a deployment ended).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Reads a secret file: refused when its group or others may read it, or when it holds fewer
/// than 16 bytes (surrounding whitespace ignored). The message names the file, for the
/// operator's configuration check only.
pub(crate) fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path).map_err(|e| format!("{shown} cannot be read: {e}"))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} may be read by its group or others (mode {mode:03o}): refused; chmod 600 it"
            ));
        }
    }
    let text = std::fs::read(path).map_err(|e| format!("{shown} cannot be read: {e}"))?;
    let secret = text.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "{shown} holds a secret shorter than {MIN_SECRET_BYTES} bytes: use a long random one"
        ));
    }
    Ok(secret)
}

/// Whether `signature` (`sha256=<hex>` or the bare hex) is the HMAC-SHA256 of `body` with
/// `key`, compared in constant time.
pub fn signature_matches(key: &[u8], body: &[u8], signature: &str) -> bool {
    let hex_part = signature.trim().strip_prefix("sha256=").unwrap_or(signature.trim());
    let given = hex::decode(hex_part).unwrap_or_default();
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// `sha256=` and the hex HMAC-SHA256 of `body` with `key`: what a sender puts in the signature
/// header.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length.
        Err(_) => String::new(),
    }
}

/// The answer to a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookAccepted {
    /// The hook's name.
    pub hook: String,
    /// The delivery id, as the sender gave it.
    pub delivery: String,
    /// The version the body names.
    pub version: String,
    /// `started` (its deployment is `deployment`) or `waiting` (the unit is busy; it starts
    /// once the unit is free).
    pub state: HookState,
    /// The deployment it started, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Accepted>,
}

/// A delivery's signed body, read as JSON: any document the sender's CI sends.
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
#[expect(dead_code, reason = "a schema only: the body is checked as bytes, then read as any JSON")]
struct HookPayload(serde_json::Value);

/// Receives a CI hook's delivery: checks its signature, freshness, delivery id and version,
/// and starts (or queues) a deployment of the hook's unit.
#[utoipa::path(
    post, path = "/v1/hooks/{name}", tag = "hooks",
    request_body(content = Object, content_type = "application/json",
        description = "The sender's JSON document, signed as sent: the hook reads the version (and its timestamp, if it declares one) at its JSON pointers."),
    params(
        ("name" = String, Path, description = "The hook's name in the server's catalog"),
        ("X-Vesemir-Signature" = Option<String>, Header,
            description = "`sha256=` and the hex HMAC-SHA256 of the raw body with the hook's secret (or the header the hook declares, e.g. `X-Hub-Signature-256`). Required."),
        ("X-Vesemir-Delivery" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]*[!-~])?$",
            description = "The sender's id of this delivery (or the header the hook declares, e.g. `X-GitHub-Delivery`): the same id answers the same deployment. Required."),
    ),
    responses(
        (status = 202, description = "Accepted: its deployment was started (`state = started`, `Location` names it) or waits for the unit's running one to end (`state = waiting`)", body = HookAccepted),
        (status = 200, description = "This delivery (its id, or its signed body) was received before: the deployment it started", body = HookAccepted),
        (status = 400, description = "The body is not JSON, or the delivery id header is missing or malformed", body = ErrorBody),
        (status = 401, description = "The signature is missing or does not match the body, or the body's timestamp is further from now than the hook allows (a replay)", body = ErrorBody),
        (status = 404, description = "No hook of this name", body = ErrorBody),
        (status = 409, description = "The unit is deploying and the hook refuses deliveries meanwhile (`when_busy = \"reject\"`)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "No version at the hook's pointer, a version outside the unit's pattern (named), a delivery id used before with another body, or the deployment refused by the fleet's state", body = ErrorBody),
        (status = 429, description = "The queue is full", body = ErrorBody),
    ),
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| crate::api::body_error(&state, &rejection))?;
    let hook = state.hooks.by_name.get(&name);
    // The same work whether the hook exists or not: the decoy key stands in for a missing one.
    let (key, signature_header) = match hook {
        Some(hook) => (&hook.secret.0, hook.config.signature_header.as_str()),
        None => (&state.hooks.decoy.0, DEFAULT_SIGNATURE_HEADER),
    };
    let signature = headers.get(signature_header).and_then(|v| v.to_str().ok()).unwrap_or("");
    let signed = signature_matches(key, &body, signature);
    let Some(hook) = hook else {
        return Err(ApiError::field(StatusCode::NOT_FOUND, "name", "is not a hook of this server's catalog"));
    };
    if !signed {
        let why = if signature.is_empty() {
            "is missing"
        } else {
            "does not match the body signed with the hook's secret"
        };
        return Err(ApiError::field(StatusCode::UNAUTHORIZED, signature_header, why));
    }
    let document: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::field(StatusCode::BAD_REQUEST, "(document)", format!("is not valid JSON: {e}"))
    })?;
    check_fresh(hook, &document, now_ms())?;
    let delivery_id = delivery_id(hook, &headers)?;
    let version = version_of(hook, &document)?;
    let unit_version_ok = state.catalog.version_matches(
        &hook.trigger.team,
        &hook.trigger.application,
        &hook.trigger.environment,
        &version,
    );
    if let Some(pattern) = unit_version_ok.err() {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("version ({})", hook.config.version),
            format!("{version:?} does not match the unit's version pattern {pattern}"),
        ));
    }
    let body_sha256 = crate::auth::sha256_hex(&body);
    let new = NewHookDelivery {
        hook: hook.config.name.clone(),
        delivery_id: delivery_id.clone(),
        body_sha256: body_sha256.clone(),
        version: version.clone(),
        received_ms: now_ms(),
    };
    let recorded = state.store.record_hook_delivery(&new).await.map_err(|e| ApiError::store(&e))?;
    let (delivery_id, version) = match recorded {
        HookRecorded::New => (delivery_id, version),
        HookRecorded::Existing(seen)
            if seen.delivery_id == delivery_id && seen.body_sha256 != body_sha256 =>
        {
            return Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                &hook.config.delivery_header,
                "was used before with another body: a new delivery needs a new id",
            ));
        }
        HookRecorded::Existing(seen) => match (seen.state, seen.deployment_id) {
            (HookState::Started, Some(id)) => {
                let record = state.store.get(id).await.map_err(|e| ApiError::store(&e))?;
                let deployment = record.as_ref().map(Accepted::from_record);
                let answer = HookAccepted {
                    hook: seen.hook,
                    delivery: seen.delivery_id,
                    version: seen.version,
                    state: HookState::Started,
                    deployment,
                };
                return Ok((StatusCode::OK, Json(answer)).into_response());
            }
            // Waiting, or refused before: tried again now, under its first id.
            _ => (seen.delivery_id, seen.version),
        },
    };
    let app = state.clone();
    let trigger = hook.trigger.clone();
    let body_sha = body_sha256.clone();
    let (id, ver) = (delivery_id.clone(), version.clone());
    // In a task of its own: a request timeout or a dropped connection cannot cut it between
    // storing the deployment and recording it on the delivery.
    let attempt = tokio::spawn(async move { attempt(&app, &trigger, &id, &ver, &body_sha).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a hook delivery's admission task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "accepting the delivery failed unexpectedly: retry",
            )
        })?;
    let answer = |state: HookState, deployment: Option<Accepted>| HookAccepted {
        hook: hook.config.name.clone(),
        delivery: delivery_id.clone(),
        version: version.clone(),
        state,
        deployment,
    };
    match attempt {
        Attempt::Started(accepted) => {
            let id = accepted.id;
            let mut response =
                (StatusCode::ACCEPTED, Json(answer(HookState::Started, Some(*accepted)))).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/v1/deployments/{id}")) {
                response.headers_mut().insert(LOCATION, location);
            }
            Ok(response)
        }
        Attempt::Busy if hook.config.when_busy == WhenBusy::Queue => {
            Ok((StatusCode::ACCEPTED, Json(answer(HookState::Waiting, None))).into_response())
        }
        Attempt::Busy => {
            let error = ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{} in {} is busy: another deployment is queued or running, and this hook refuses deliveries meanwhile; send it again when it ends",
                    hook.trigger.application, hook.trigger.environment
                ),
            );
            refuse(&state, &hook.config.name, &delivery_id, &error).await;
            Err(error)
        }
        Attempt::Refused(error) => {
            if error.status() != StatusCode::INTERNAL_SERVER_ERROR {
                refuse(&state, &hook.config.name, &delivery_id, &error).await;
            }
            Err(error)
        }
    }
}

/// Records a refused delivery (best effort: the caller gets the refusal either way).
async fn refuse(app: &App, hook: &str, delivery_id: &str, error: &ApiError) {
    let recorded =
        app.store.set_hook_delivery(hook, delivery_id, HookState::Refused, None, Some(error.detail())).await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, hook, "a refused hook delivery could not be recorded");
    }
}

/// 401 when the hook declares a timestamp and the body's is missing or further than `max_age`
/// from `now_ms`.
fn check_fresh(hook: &Hook, document: &serde_json::Value, now_ms: i64) -> Result<(), ApiError> {
    let Some(pointer) = &hook.config.timestamp else { return Ok(()) };
    let field = format!("timestamp ({pointer})");
    let sent_ms = match document.pointer(pointer) {
        Some(serde_json::Value::Number(n)) => n.as_i64().map(|s| s.saturating_mul(1000)),
        Some(serde_json::Value::String(text)) => {
            text.parse::<i64>().ok().map(|s| s.saturating_mul(1000)).or_else(|| {
                humantime::parse_rfc3339_weak(text)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
            })
        }
        _ => None,
    };
    let Some(sent_ms) = sent_ms else {
        return Err(ApiError::field(
            StatusCode::UNAUTHORIZED,
            &field,
            "is missing: Unix seconds or RFC 3339 time",
        ));
    };
    let max_ms = i64::try_from(hook.config.max_age.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(sent_ms).abs() > max_ms {
        return Err(ApiError::field(
            StatusCode::UNAUTHORIZED,
            &field,
            format!(
                "is further than {} from the server's time: refused as a replay",
                humantime::format_duration(hook.config.max_age)
            ),
        ));
    }
    Ok(())
}

/// The delivery id: 1 to 200 visible ASCII characters (400 otherwise).
fn delivery_id(hook: &Hook, headers: &HeaderMap) -> Result<String, ApiError> {
    let header = &hook.config.delivery_header;
    let visible = |k: &str| k.bytes().all(|b| (b' '..=b'~').contains(&b));
    headers
        .get(header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200 && visible(k))
        .map(ToOwned::to_owned)
        .ok_or_else(|| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                header,
                "is missing: 1 to 200 visible ASCII characters naming this delivery",
            )
        })
}

/// The version at the hook's pointer (a string, or a number written as text): 422 naming the
/// pointer otherwise.
fn version_of(hook: &Hook, document: &serde_json::Value) -> Result<String, ApiError> {
    let pointer = &hook.config.version;
    match document.pointer(pointer) {
        Some(serde_json::Value::String(text)) => Ok(text.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("version ({pointer})"),
            "is missing from the body, or is not a string: the hook reads the version there",
        )),
    }
}

/// What trying to start a delivery's deployment gave.
enum Attempt {
    /// Admitted: this deployment (new, or the one this delivery started before).
    Started(Box<Accepted>),
    /// The unit is deploying.
    Busy,
    /// Refused: the answer to give.
    Refused(ApiError),
}

/// Tries to start the deployment of delivery `delivery_id` of `trigger`, and records the
/// outcome on the delivery (started or left waiting; a refusal is the caller's to record). The
/// deployment's idempotency key is the delivery id, so two attempts at once (a repeated
/// delivery, the dispatcher) start one deployment.
async fn attempt(
    app: &App,
    trigger: &Trigger,
    delivery_id: &str,
    version: &str,
    body_sha256: &str,
) -> Attempt {
    let name = trigger.name.as_str();
    let principal = trigger.principal.clone();
    let request = serde_json::json!({
        "team": trigger.team,
        "application": trigger.application,
        "environment": trigger.environment,
        "version": version,
    });
    let admitted = match app.catalog.admit(&request.to_string(), &principal, &app.playbooks) {
        Ok(admitted) => admitted,
        Err(denied) => return Attempt::Refused(ApiError::denied(&denied)),
    };
    let ports = match crate::api::ports_for(app, &admitted.request) {
        Ok(ports) => ports,
        Err(error) => return Attempt::Refused(error),
    };
    if let Err(e) = app.runner.precheck(&admitted.request, &ports).await {
        return Attempt::Refused(ApiError::refused(&e));
    }
    let new = match admitted.to_record(
        &principal.name,
        Some(format!("{}{delivery_id}", trigger.key_prefix)),
        body_sha256.to_owned(),
    ) {
        Ok(new) => new,
        Err(e) => {
            return Attempt::Refused(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request could not be encoded: {e}"),
            ))
        }
    };
    let submitted = app
        .runner
        .submit_with(admitted.request, ports, new, crate::store::Origin::default(), admitted.secrets)
        .await;
    let accepted = match submitted {
        Ok(Submitted::New(id)) => Accepted {
            id,
            status: Status::Queued,
            requested_by: principal.name,
            links: crate::wire::Links::of(id),
        },
        Ok(Submitted::Existing(record)) => Accepted::from_record(&record),
        Err(SubmitError::Conflict(_)) => return Attempt::Busy,
        Err(e @ SubmitError::KeyReused(_)) => {
            return Attempt::Refused(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                &trigger.id_field,
                e.to_string(),
            ))
        }
        Err(e @ SubmitError::QueueFull(_)) => {
            return Attempt::Refused(ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()))
        }
        Err(e @ SubmitError::TeamQuota { .. }) => {
            return Attempt::Refused(ApiError::field(
                StatusCode::TOO_MANY_REQUESTS,
                "limits.max_queued_per_team",
                e.to_string(),
            ))
        }
        Err(SubmitError::ShuttingDown) => return Attempt::Refused(ApiError::shutting_down()),
        Err(SubmitError::Store(e)) => return Attempt::Refused(ApiError::store(&e)),
    };
    if let Err(e) =
        app.store.set_hook_delivery(name, delivery_id, HookState::Started, Some(accepted.id), None).await
    {
        // The deployment runs; a repeat of the delivery finds it by its idempotency key.
        tracing::error!(error = %e, hook = name, deployment = accepted.id, "a started hook delivery could not be recorded");
    }
    Attempt::Started(Box::new(accepted))
}

/// Starts waiting deliveries of queueing hooks once their unit is free: woken when a
/// deployment ends here ([`Hooks::wake`]), and every `DISPATCH_EVERY` (2 s) for those that ended on
/// another instance. Oldest first per hook; stops when the app is gone.
pub async fn dispatch(app: Weak<App>) {
    loop {
        let Some(strong) = app.upgrade() else { return };
        if strong.hooks.is_empty() {
            return;
        }
        dispatch_once(&strong).await;
        let hooks = strong.hooks.clone();
        drop(strong);
        let _ = tokio::time::timeout(DISPATCH_EVERY, hooks.wake.notified()).await;
    }
}

/// One pass over every queueing hook's waiting deliveries.
async fn dispatch_once(app: &Arc<App>) {
    let triggers: Vec<Trigger> = app
        .hooks
        .by_name
        .values()
        .map(|h| &h.trigger)
        .chain(&app.hooks.sources)
        .filter(|t| t.when_busy == WhenBusy::Queue)
        .cloned()
        .collect();
    for trigger in triggers {
        let name = trigger.name.clone();
        let waiting = match app.store.waiting_hook_deliveries(&name).await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::warn!(error = %e, hook = %name, "waiting hook deliveries could not be read");
                continue;
            }
        };
        for delivery in waiting {
            match attempt(app, &trigger, &delivery.delivery_id, &delivery.version, &delivery.body_sha256)
                .await
            {
                Attempt::Started(accepted) => {
                    tracing::info!(hook = %name, delivery = %delivery.delivery_id, deployment = accepted.id, "a waiting hook delivery started");
                    // One at a time per unit: the next waits for this one.
                    break;
                }
                Attempt::Busy => break,
                Attempt::Refused(error) if error.status() == StatusCode::INTERNAL_SERVER_ERROR => break,
                Attempt::Refused(error) => {
                    tracing::warn!(hook = %name, delivery = %delivery.delivery_id, error = error.detail(), "a waiting hook delivery was refused");
                    refuse(app, &name, &delivery.delivery_id, &error).await;
                }
            }
        }
    }
}

/// What handing a delivery to the deliveries' path gave ([`deliver`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Its deployment was admitted: this one.
    Started(i64),
    /// It waits for the unit (busy, or the server stopping): it starts once the unit is free,
    /// on any instance.
    Waiting,
    /// Refused, and recorded so: why.
    Refused(String),
    /// The same delivery was recorded before (here, or by another instance): nothing done.
    Before,
}

/// Records delivery `delivery_id` of `trigger` (version `version`, `body_sha256` naming what
/// it carries) and tries to start its deployment, as a CI hook's delivery is; a delivery
/// recorded before (on any instance sharing the database) does nothing, so one delivery starts
/// at most one deployment. Errors are the store's.
pub(crate) async fn deliver(
    app: &App,
    trigger: &Trigger,
    delivery_id: &str,
    version: &str,
    body_sha256: &str,
) -> Result<Delivered, crate::store::StoreError> {
    let new = NewHookDelivery {
        hook: trigger.name.clone(),
        delivery_id: delivery_id.to_owned(),
        body_sha256: body_sha256.to_owned(),
        version: version.to_owned(),
        received_ms: now_ms(),
    };
    if let HookRecorded::Existing(_) = app.store.record_hook_delivery(&new).await? {
        return Ok(Delivered::Before);
    }
    Ok(match attempt(app, trigger, delivery_id, version, body_sha256).await {
        Attempt::Started(accepted) => Delivered::Started(accepted.id),
        Attempt::Busy if trigger.when_busy == WhenBusy::Queue => Delivered::Waiting,
        // Left waiting: the dispatcher tries it again (a store error, or a server stopping).
        Attempt::Refused(error)
            if matches!(
                error.status(),
                StatusCode::INTERNAL_SERVER_ERROR | StatusCode::SERVICE_UNAVAILABLE
            ) && trigger.when_busy == WhenBusy::Queue =>
        {
            Delivered::Waiting
        }
        Attempt::Busy => {
            let why = format!("{} in {} is busy", trigger.application, trigger.environment);
            let error = ApiError::new(StatusCode::CONFLICT, why.clone());
            refuse(app, &trigger.name, delivery_id, &error).await;
            Delivered::Refused(why)
        }
        Attempt::Refused(error) => {
            refuse(app, &trigger.name, delivery_id, &error).await;
            Delivered::Refused(error.detail().to_owned())
        }
    })
}
