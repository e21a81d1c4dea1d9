//! The pages of a signed-in person: the deployments list, a deployment's page, the start form,
//! and the orders (cancel, pause, resume, confirm, retry, restore, roll back).
//!
//! Every page and order goes through the API's own handlers ([`crate::api`]) with the
//! session's [`Principal`]: the same authorization (another team's deployment is 404), the same
//! admission and the same errors; these functions only turn the API's JSON into HTML and forms
//! into the API's bodies. Live parts (`/web/page.js`) follow the deployment's event stream
//! (`/deployments/{id}/events`, the API's stream behind the session, resumed by
//! `Last-Event-ID`) and refresh rows from `/deployments/{id}/view.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vesemir_core::Event;

use super::{escape, message, page, session, WebSession, WebState};
use crate::api::{self, ListParams};
use crate::auth::Principal;
use crate::catalog::{Denied, UnitConfig};
use crate::wire::{Deployment, DeploymentList, HostResult};

/// Rows per page of the list.
const PAGE_SIZE: i64 = 25;
/// Output lines kept per host on the page.
const OUTPUT_LINES: usize = 200;
/// Events rendered on the page (the rest arrive live).
const EVENTS_ON_PAGE: i64 = 5_000;

/// What the API answered, as JSON, or its problem.
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) detail: String,
    pub(super) problems: Vec<(String, String)>,
}

/// Reads an API handler's answer: `Ok(json)` for 2xx, the problem's detail otherwise.
pub(super) async fn answer(result: Result<Response, api::ApiError>) -> Result<serde_json::Value, Failure> {
    let response = match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if status.is_success() {
        return Ok(json);
    }
    let problems = json["problems"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|p| {
                    (
                        p["field"].as_str().unwrap_or_default().to_owned(),
                        p["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Err(Failure {
        status,
        detail: json["detail"].as_str().unwrap_or("the server refused").to_owned(),
        problems,
    })
}

/// Reads an API handler's answer as a `T` for a page: the failure's page when the API refused,
/// or a 500 page naming `what` when its JSON is not a `T`.
pub(super) async fn read_answer<T: serde::de::DeserializeOwned>(
    result: Result<Response, api::ApiError>,
    what: &str,
    session: &WebSession,
) -> Result<T, Response> {
    match answer(result).await.map(serde_json::from_value) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            Some(session),
            &message(&format!("{what} could not be read.")),
        )),
        Err(failure) => Err(failure_page(&failure, session)),
    }
}

pub(super) fn failure_page(failure: &Failure, session: &WebSession) -> Response {
    let status = failure.status;
    if status == StatusCode::NOT_FOUND {
        return page(
            StatusCode::NOT_FOUND,
            "Not found · Vesemir",
            Some(session),
            &message("There is no such page, or it is not your team's."),
        );
    }
    let mut body = message(&failure.detail);
    if !failure.problems.is_empty() {
        body.push_str("<ul class=\"problems\">");
        for (field, text) in &failure.problems {
            let _ = write!(body, "<li><code>{}</code>: {}</li>", escape(field), escape(text));
        }
        body.push_str("</ul>");
    }
    page(status, "Refused · Vesemir", Some(session), &body)
}

/// `GET /deployments/{id}/view.json`: the API's view of a deployment, behind the session.
pub(super) async fn view_json(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let Some((principal, _)) = signed(&state, &headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match api::get_one(State(state.app.clone()), principal, Ok(Path(id)), HeaderMap::new()).await {
        Ok(response) => {
            let mut response = response;
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => error.into_response(),
    }
}

/// `?after=N`: where the page's server-rendered log ends.
#[derive(Debug, Deserialize)]
pub(super) struct After {
    pub(super) after: Option<u64>,
}

impl After {
    /// A first connection resumes the API's stream after the page's log (as `Last-Event-ID`);
    /// a browser's reconnection sends its own, which wins.
    pub(super) fn resume(&self, headers: &mut HeaderMap) {
        if headers.contains_key("last-event-id") {
            return;
        }
        if let Some(after) = self.after.and_then(|a| HeaderValue::from_str(&a.to_string()).ok()) {
            headers.insert("last-event-id", after);
        }
    }
}

/// `GET /deployments/{id}/events`: the API's event stream behind the session. A browser's
/// reconnection sends `Last-Event-ID`; the first connection says where the page's log ends
/// with `?after=`.
pub(super) async fn events(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    Query(after): Query<After>,
    mut headers: HeaderMap,
) -> Response {
    let Some((principal, _)) = signed(&state, &headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    after.resume(&mut headers);
    match api::events(State(state.app.clone()), principal, Ok(Path(id)), headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

pub(super) async fn signed(state: &WebState, headers: &HeaderMap) -> Option<(Principal, WebSession)> {
    super::signed_in(state, headers).await.ok().flatten()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    application: Option<String>,
    environment: Option<String>,
    status: Option<String>,
    before: Option<i64>,
}

/// `GET /deployments`: the person's teams' deployments, newest first, filtered, paged.
pub(super) async fn list(
    State(state): State<WebState>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let (principal, session) = signed_or_return!(state, headers);
    let nonempty = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    let params = ListParams {
        application: nonempty(&query.application),
        environment: nonempty(&query.environment),
        team: None,
        status: nonempty(&query.status),
        limit: Some(PAGE_SIZE),
        before: query.before,
    };
    let result = api::list(State(state.app.clone()), principal, Ok(Query(params)))
        .await
        .map(IntoResponse::into_response);
    let list: DeploymentList = match read_answer(result, "The list", &session).await {
        Ok(value) => value,
        Err(refused) => return refused,
    };
    let mut body =
        String::from("<h1>Deployments</h1><p><a href=\"/start\" class=\"button\">Start a deployment</a></p>");
    let field = |name: &str, label: &str, value: &Option<String>| {
        format!(
            "<label>{label} <input name=\"{name}\" value=\"{}\" size=\"12\"></label>",
            escape(value.as_deref().unwrap_or_default())
        )
    };
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/deployments\" class=\"filters\">{}{}<label>Status <select name=\"status\"><option value=\"\">any</option>",
        field("application", "Application", &query.application),
        field("environment", "Environment", &query.environment)
    );
    for status in crate::store::Status::ALL {
        let name = status.as_str();
        let selected = if query.status.as_deref() == Some(name) { " selected" } else { "" };
        let _ = write!(body, "<option{selected}>{name}</option>");
    }
    body.push_str("</select></label><button type=\"submit\">Filter</button></form>");
    if list.deployments.is_empty() {
        body.push_str("<p>No deployments match.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table class=\"deployments\"><thead><tr><th>#</th><th>Application</th><th>Environment</th>\
             <th>Version</th><th>Status</th><th>Hosts</th><th>Asked by</th><th>Created</th></tr></thead><tbody>",
        );
        for d in &list.deployments {
            let live =
                if d.status.is_finished() { String::new() } else { format!(" data-live=\"{}\"", d.id) };
            let _ = write!(
                body,
                "<tr{live} data-deployment-row=\"{id}\"><td><a href=\"/deployments/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"status\" data-field=\"status\">{}</td><td data-field=\"totals\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.application),
                escape(&d.environment),
                escape(&d.version),
                status_text(d),
                totals_text(d),
                escape(&d.requested_by),
                time(&d.timings.created_at),
                id = d.id,
            );
        }
        body.push_str("</tbody></table></div>");
    }
    if let Some(next) = &list.next {
        // The API's `next` link carries `before`: keep the filters, move the page.
        if let Some(before) = next.split("before=").nth(1).and_then(|b| b.split('&').next()) {
            let mut link = format!("/deployments?before={}", escape(before));
            for (name, value) in [
                ("application", &query.application),
                ("environment", &query.environment),
                ("status", &query.status),
            ] {
                if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                    let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
                    let _ = write!(link, "&amp;{name}={encoded}");
                }
            }
            let _ = write!(body, "<p><a href=\"{link}\" rel=\"next\">Older deployments</a></p>");
        }
    }
    page(StatusCode::OK, "Deployments · Vesemir", Some(&session), &body)
}

/// `GET /deployments/{id}`: the request, the plan, one row per host, the event log, the
/// summary and the orders that apply.
pub(super) async fn deployment(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let (principal, session) = signed_or_return!(state, headers);
    let result =
        api::get_one(State(state.app.clone()), principal.clone(), Ok(Path(id)), HeaderMap::new()).await;
    let view: Deployment = match read_answer(result, "The deployment", &session).await {
        Ok(value) => value,
        Err(refused) => return refused,
    };
    // Authorized above: the API answered this principal.
    let events = state.app.store.events_after(id, 0, EVENTS_ON_PAGE).await.unwrap_or_default();
    let record = state.app.store.get(id).await.ok().flatten();
    let mut out_ms: BTreeMap<String, u64> = BTreeMap::new();
    let mut output: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut plan = String::new();
    for event in &events {
        let json = serde_json::to_value(event).unwrap_or_default();
        match json["type"].as_str() {
            Some("host_finished") => {
                if let (Some(host), Some(ms)) = (json["host"].as_str(), json["out_of_rotation_ms"].as_u64()) {
                    out_ms.insert(host.to_owned(), ms);
                }
            }
            Some("host_output") => {
                if let (Some(host), Some(line)) = (json["host"].as_str(), json["line"].as_str()) {
                    let lines = output.entry(host.to_owned()).or_default();
                    if lines.len() < OUTPUT_LINES {
                        lines.push(format!("[{}] {line}", json["step"].as_str().unwrap_or_default()));
                    }
                }
            }
            Some("deployment_started") => plan = plan_text(&json),
            _ => {}
        }
    }
    let last = events.last().map_or(0, |e| e.seq);
    let finished = view.status.is_finished();
    let mut body = format!(
        "<div data-deployment=\"{id}\" data-last-event=\"{last}\" data-finished=\"{finished}\">\
         <h1>Deployment {id}: {} {} → {}</h1>\
         <p class=\"summary\">Status: <strong data-field=\"status\">{}</strong> · <span data-field=\"totals\">{}</span></p>",
        escape(&view.application),
        escape(&view.environment),
        escape(&view.version),
        status_text(&view),
        totals_text(&view),
    );
    body.push_str(&orders(&view, &session, &principal));
    // The request, as stored: secret variables are `***` there already.
    let _ = write!(
        body,
        "<h2>Request</h2><dl class=\"facts\"><dt>Team</dt><dd>{}</dd><dt>Asked by</dt><dd>{}</dd><dt>Playbook</dt><dd>{}</dd>\
         <dt>Targets</dt><dd><code>{}</code></dd><dt>Created</dt><dd>{}</dd><dt>Started</dt><dd data-field=\"started\">{}</dd><dt>Finished</dt><dd data-field=\"finished\">{}</dd></dl>",
        escape(&view.team),
        escape(&view.requested_by),
        escape(view.playbook.as_deref().unwrap_or("none")),
        escape(&view.query),
        time(&view.timings.created_at),
        view.timings.started_at.as_deref().map_or_else(|| "not yet".to_owned(), time),
        view.timings.finished_at.as_deref().map_or_else(|| "not yet".to_owned(), time),
    );
    if let Some(record) = &record {
        if let Ok(request) = serde_json::from_str::<serde_json::Value>(&record.request) {
            if let Some(variables) =
                request.get("variables").and_then(serde_json::Value::as_object).filter(|v| !v.is_empty())
            {
                body.push_str("<h3>Variables</h3><dl class=\"facts\">");
                for (name, value) in variables {
                    let _ = write!(
                        body,
                        "<dt>{}</dt><dd><code>{}</code></dd>",
                        escape(name),
                        escape(value.as_str().unwrap_or("***"))
                    );
                }
                body.push_str("</dl>");
            }
        }
    }
    if !plan.is_empty() {
        let _ = write!(body, "<h2>Plan</h2><p>{}</p>", escape(&plan));
    }
    let _ = write!(body, "<h2>Hosts</h2><div class=\"scroll\"><table class=\"hosts\"><thead><tr><th>Host</th><th>Phase</th><th>Rotation</th><th>Outcome</th><th>Out of rotation</th><th>Why</th></tr></thead><tbody>");
    for host in &view.hosts {
        body.push_str(&host_row(host, out_ms.get(&host.name).copied(), output.get(&host.name)));
    }
    body.push_str("</tbody></table></div>");
    if let Some(error) = &view.error {
        let _ = write!(body, "<h2>Summary</h2><p role=\"alert\" data-field=\"error\">{}</p>", escape(error));
    } else {
        body.push_str("<h2>Summary</h2><p data-field=\"error\"></p>");
    }
    let failed: Vec<&HostResult> = view.hosts.iter().filter(|h| h.error.is_some()).collect();
    body.push_str("<ul class=\"failed\" data-field=\"failed\">");
    for host in failed {
        let _ = write!(
            body,
            "<li><strong>{}</strong>: {}</li>",
            escape(&host.name),
            escape(host.error.as_deref().unwrap_or_default())
        );
    }
    body.push_str("</ul>");
    if !view.out_of_rotation.is_empty() {
        let _ = write!(body, "<p>Left out of rotation: {}</p>", escape(&view.out_of_rotation.join(", ")));
    }
    body.push_str("<h2>Events</h2><ol class=\"events\" data-field=\"events\">");
    for event in &events {
        body.push_str(&event_line(event));
    }
    body.push_str("</ol></div>");
    page(StatusCode::OK, &format!("Deployment {id} · Vesemir"), Some(&session), &body)
}

fn host_row(host: &HostResult, out_ms: Option<u64>, output: Option<&Vec<String>>) -> String {
    let rotation = serde_json::to_value(host.rotation)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default();
    let outcome = host
        .outcome
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default();
    let out = out_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_default();
    let lines = output.map_or_else(String::new, |lines| {
        format!(
            "<details><summary>output ({})</summary><pre>{}</pre></details>",
            lines.len(),
            escape(&lines.join("\n"))
        )
    });
    format!(
        "<tr data-host=\"{name}\"><th scope=\"row\">{name}</th><td data-field=\"phase\">{}</td><td data-field=\"rotation\">{}</td>\
         <td data-field=\"outcome\">{}</td><td data-field=\"out\">{}</td><td data-field=\"why\">{}{lines}</td></tr>",
        escape(&host.phase.to_string()),
        escape(&rotation),
        escape(&outcome),
        escape(&out),
        escape(host.error.as_deref().unwrap_or_default()),
        name = escape(&host.name),
    )
}

/// One line of the event log (the script writes the same shape).
fn event_line(event: &Event) -> String {
    let json = serde_json::to_value(event).unwrap_or_default();
    let kind = json["type"].as_str().unwrap_or("event").replace('_', " ");
    let mut rest = json.as_object().cloned().unwrap_or_default();
    rest.remove("type");
    rest.remove("seq");
    rest.remove("elapsed");
    let detail = rest
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "<li data-seq=\"{}\"><span class=\"kind\">{}</span> {}</li>",
        event.seq,
        escape(&kind),
        escape(&detail)
    )
}

fn plan_text(started: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for (key, label) in [
        ("hosts", "hosts"),
        ("batches", "batches"),
        ("concurrency", "at most out at once"),
        ("max_failures", "failures tolerated"),
    ] {
        if let Some(n) = started[key].as_u64() {
            parts.push(format!("{n} {label}"));
        } else if let Some(items) = started[key].as_array() {
            parts.push(format!("{} {label}", items.len()));
        }
    }
    parts.join(", ")
}

fn status_text(view: &Deployment) -> String {
    let mut text = view.status.as_str().to_owned();
    if view.paused {
        text.push_str(" (paused)");
    }
    if view.cancel_requested && !view.status.is_finished() {
        text.push_str(" (cancelling)");
    }
    escape(&text)
}

fn totals_text(view: &Deployment) -> String {
    match (&view.totals, view.host_count) {
        (Some(t), _) => format!(
            "{} succeeded, {} failed, {} unreachable, {} skipped, {} cancelled",
            t.succeeded, t.failed, t.unreachable, t.skipped, t.cancelled
        ),
        (None, Some(n)) => format!("{n} hosts"),
        (None, None) => String::new(),
    }
}

/// A UTC time the script shows in the viewer's zone (UTC without the script).
fn time(rfc3339: &str) -> String {
    format!("<time datetime=\"{0}\">{0}</time>", escape(rfc3339))
}

/// The orders this deployment takes now, for a person who may give them: buttons that post
/// at once (pause, resume, confirm), links to a confirmation for the destructive ones.
fn orders(view: &Deployment, session: &WebSession, principal: &Principal) -> String {
    if !principal.may_deploy_for(&view.team) {
        return String::new();
    }
    let id = view.id;
    let mut html = String::from("<div class=\"orders\">");
    let direct = |html: &mut String, order: &str, label: &str| {
        let _ = write!(
            html,
            "<form method=\"post\" action=\"/deployments/{id}/{order}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">{label}</button></form>",
            escape(&session.csrf)
        );
    };
    if view.links.pause.is_some() {
        direct(&mut html, "pause", "Pause");
    }
    if view.links.resume.is_some() {
        direct(&mut html, "resume", "Resume");
    }
    if view.links.confirm.is_some() {
        direct(&mut html, "confirm", "Confirm canary");
    }
    // Issue 18: a promotion waiting for a person.
    let promotion = view.promotion.as_ref().filter(|p| p.confirm.is_some());
    if let Some(promotion) = promotion {
        direct(&mut html, "promotion-confirm", &format!("Promote to {}", escape(&promotion.to)));
    }
    let link = |html: &mut String, order: &str, label: &str| {
        let _ = write!(html, "<a class=\"button danger\" href=\"/deployments/{id}/{order}\">{label}</a>");
    };
    if !view.status.is_finished() {
        link(&mut html, "cancel", "Cancel…");
    }
    if view.links.retry.is_some() {
        link(&mut html, "retry", "Retry failed hosts…");
    }
    if view.links.restore.is_some() {
        link(&mut html, "restore", "Restore servers left out…");
    }
    if view.links.rollback.is_some() {
        link(&mut html, "rollback", "Roll back…");
    }
    if promotion.is_some() {
        link(&mut html, "promotion-decline", "Decline the promotion…");
    }
    html.push_str("</div>");
    html
}

/// An order a person gives a deployment from its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Cancel,
    Pause,
    Resume,
    Confirm,
    Retry,
    Restore,
    Rollback,
    ConfirmPromotion,
    DeclinePromotion,
}

impl Order {
    const ALL: [Self; 9] = [
        Self::Cancel,
        Self::Pause,
        Self::Resume,
        Self::Confirm,
        Self::Retry,
        Self::Restore,
        Self::Rollback,
        Self::ConfirmPromotion,
        Self::DeclinePromotion,
    ];

    /// The order named by the last segment of its path.
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|order| order.path() == text)
    }

    /// The last segment of its path: `/deployments/{id}/{path}`, as the API names it.
    fn path(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Confirm => "confirm",
            Self::Retry => "retry",
            Self::Restore => "restore",
            Self::Rollback => "rollback",
            Self::ConfirmPromotion => "promotion-confirm",
            Self::DeclinePromotion => "promotion-decline",
        }
    }

    /// Whether it asks "are you sure?" first.
    fn destructive(self) -> bool {
        matches!(self, Self::Cancel | Self::Retry | Self::Restore | Self::Rollback | Self::DeclinePromotion)
    }

    fn question(self) -> &'static str {
        match self {
            Self::Cancel => "Cancel this deployment? Hosts in flight finish or are put back; no new host starts.",
            Self::Retry => "Start a new deployment of the hosts this one did not finish?",
            Self::Restore => "Put the servers this deployment left out of rotation back (health gate first)?",
            Self::Rollback => "Deploy the previous version that succeeded on every host of this application and environment?",
            Self::DeclinePromotion => "Decline promoting this version to the next unit? The chain stops here.",
            Self::Pause | Self::Resume | Self::Confirm | Self::ConfirmPromotion => "",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Cancel => "Cancel the deployment",
            Self::Retry => "Retry failed hosts",
            Self::Restore => "Restore",
            Self::Rollback => "Roll back",
            Self::Pause => "Pause",
            Self::Resume => "Resume",
            Self::Confirm => "Confirm canary",
            Self::ConfirmPromotion => "Promote",
            Self::DeclinePromotion => "Decline the promotion",
        }
    }
}

/// `GET /deployments/{id}/{order}`: the confirmation of a destructive order.
pub(super) async fn confirm_order(
    State(state): State<WebState>,
    Path((id, order)): Path<(i64, String)>,
    headers: HeaderMap,
) -> Response {
    let (principal, session) = signed_or_return!(state, headers);
    let Some(order) = Order::parse(&order).filter(|o| o.destructive()) else {
        return page(
            StatusCode::NOT_FOUND,
            "Not found · Vesemir",
            Some(&session),
            &message("There is no such page."),
        );
    };
    // Reading it through the API: another team's deployment is 404 here too.
    let result = api::get_one(State(state.app.clone()), principal, Ok(Path(id)), HeaderMap::new()).await;
    if let Err(failure) = answer(result).await {
        return failure_page(&failure, &session);
    }
    let body = format!(
        "<h1>Deployment {id}</h1><p>{}</p><form method=\"post\" action=\"/deployments/{id}/{}\" class=\"orders\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
         <button type=\"submit\" class=\"danger\">{}</button><a href=\"/deployments/{id}\">Back</a></form>",
        escape(order.question()),
        order.path(),
        escape(&session.csrf),
        escape(order.label()),
    );
    page(StatusCode::OK, &format!("{} · Vesemir", order.label()), Some(&session), &body)
}

/// `POST /deployments/{id}/{order}`: same origin, the session's CSRF token, `confirmed=yes`
/// for a destructive order; then the API's handler for it.
pub(super) async fn give_order(
    State(state): State<WebState>,
    Path((id, order)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !session::same_origin(&headers) {
        return super::cross_site();
    }
    let (principal, session) = signed_or_return!(state, headers);
    if !super::form_csrf_ok(&body, &session) {
        return super::cross_site();
    }
    let Some(order) = Order::parse(&order) else {
        return page(
            StatusCode::NOT_FOUND,
            "Not found · Vesemir",
            Some(&session),
            &message("There is no such order."),
        );
    };
    let confirmed = form_urlencoded::parse(&body).any(|(k, v)| k == "confirmed" && v == "yes");
    if order.destructive() && !confirmed {
        return super::see_other_to(&format!("/deployments/{id}/{}", order.path()));
    }
    let app = State(state.app.clone());
    let empty = || Ok(Bytes::new());
    let result = match order {
        Order::Cancel => api::cancel(app, principal, Ok(Path(id))).await,
        Order::Pause => api::pause(app, principal, Ok(Path(id))).await,
        Order::Resume => api::resume(app, principal, Ok(Path(id))).await,
        Order::Confirm => api::confirm(app, principal, Ok(Path(id))).await,
        Order::ConfirmPromotion => api::confirm_promotion(app, principal, Ok(Path(id))).await,
        Order::DeclinePromotion => api::decline_promotion(app, principal, Ok(Path(id))).await,
        Order::Retry => api::retry(app, principal, Ok(Path(id)), empty()).await,
        Order::Restore => {
            api::restore(app, principal, Ok(Path(id)), empty()).await.map(IntoResponse::into_response)
        }
        Order::Rollback => {
            // The API rolls back an application and environment: read which (authorized).
            let result =
                api::get_one(State(state.app.clone()), principal.clone(), Ok(Path(id)), HeaderMap::new())
                    .await;
            let view: Deployment = match read_answer(result, "The deployment", &session).await {
                Ok(value) => value,
                Err(refused) => return refused,
            };
            api::rollback(app, principal, Path((view.application, view.environment)), empty()).await
        }
    };
    match answer(result).await {
        Ok(json) => {
            let target = match order {
                Order::Retry | Order::Rollback => json["id"].as_i64().unwrap_or(id),
                Order::ConfirmPromotion => json["promotion"]["deployment"].as_i64().unwrap_or(id),
                _ => id,
            };
            super::see_other_to(&format!("/deployments/{target}"))
        }
        Err(failure) => failure_page(&failure, &session),
    }
}

/// `GET /start`: the units the person may deploy, or one unit's form.
pub(super) async fn start_form(
    State(state): State<WebState>,
    Query(unit): Query<UnitQuery>,
    headers: HeaderMap,
) -> Response {
    let (principal, session) = signed_or_return!(state, headers);
    let units: Vec<&UnitConfig> =
        state.web.units.iter().filter(|u| principal.may_deploy_for(&u.team)).collect();
    let chosen = units.iter().find(|u| {
        Some(u.team.as_str()) == unit.team.as_deref()
            && Some(u.application.as_str()) == unit.application.as_deref()
            && Some(u.environment.as_str()) == unit.environment.as_deref()
    });
    let Some(chosen) = chosen else {
        let mut body = String::from("<h1>Start a deployment</h1>");
        if units.is_empty() {
            body.push_str("<p>Your teams have no unit you may deploy.</p>");
        } else {
            body.push_str("<ul class=\"units\">");
            for u in &units {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("team", &u.team)
                    .append_pair("application", &u.application)
                    .append_pair("environment", &u.environment)
                    .finish();
                let _ = write!(
                    body,
                    "<li><a href=\"/start?{}\">{} in {}</a> <small>({})</small></li>",
                    escape(&query),
                    escape(&u.application),
                    escape(&u.environment),
                    escape(&u.team)
                );
            }
            body.push_str("</ul>");
        }
        return page(StatusCode::OK, "Start a deployment · Vesemir", Some(&session), &body);
    };
    page(
        StatusCode::OK,
        "Start a deployment · Vesemir",
        Some(&session),
        &unit_form(chosen, &session, &BTreeMap::new(), None),
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct UnitQuery {
    team: Option<String>,
    application: Option<String>,
    environment: Option<String>,
}

/// The form of one unit, filled with `values`, with `notice` (problems or a preview) above.
fn unit_form(
    unit: &UnitConfig,
    session: &WebSession,
    values: &BTreeMap<String, String>,
    notice: Option<&str>,
) -> String {
    let value = |name: &str| escape(values.get(name).map(String::as_str).unwrap_or_default());
    let mut body = format!(
        "<h1>Deploy {} to {}</h1><p>Team {}. Strategy limits: at most {} out at once.</p>{}\
         <form method=\"post\" action=\"/start\" class=\"start\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"team\" value=\"{}\"><input type=\"hidden\" name=\"application\" value=\"{}\">\
         <input type=\"hidden\" name=\"environment\" value=\"{}\">\
         <label for=\"version\">Version</label><input id=\"version\" name=\"version\" required value=\"{}\" pattern=\"{}\">",
        escape(&unit.application),
        escape(&unit.environment),
        escape(&unit.team),
        escape(&unit.strategy.max_concurrency.to_string()),
        notice.unwrap_or_default(),
        escape(&session.csrf),
        escape(&unit.team),
        escape(&unit.application),
        escape(&unit.environment),
        value("version"),
        escape(unit.version.trim_start_matches('^').trim_end_matches('$')),
    );
    for (name, variable) in &unit.variables {
        let field = format!("var.{name}");
        let kind = if variable.secret { "password" } else { "text" };
        let current = values.get(&field).cloned().or_else(|| variable.default.clone()).unwrap_or_default();
        let _ = write!(
            body,
            "<label for=\"{f}\">{n}{}</label><input id=\"{f}\" name=\"{f}\" type=\"{kind}\" value=\"{}\" autocomplete=\"off\">",
            if variable.secret { " (secret: never shown again; type it before Deploy)" } else { "" },
            if variable.secret { String::new() } else { escape(&current) },
            f = escape(&field),
            n = escape(name),
        );
    }
    let _ = write!(
        body,
        "<label for=\"concurrency\">Hosts at once (at most {})</label><input id=\"concurrency\" name=\"concurrency\" value=\"{}\" placeholder=\"{}\">\
         <input type=\"hidden\" name=\"key\" value=\"{}\">\
         <div class=\"orders\"><button type=\"submit\" name=\"action\" value=\"plan\">Plan</button>\
         <button type=\"submit\" name=\"action\" value=\"deploy\">Deploy</button></div></form>",
        escape(&unit.strategy.max_concurrency.to_string()),
        value("concurrency"),
        escape(&unit.strategy.concurrency.to_string()),
        escape(values.get("key").map(String::as_str).unwrap_or_default()),
    );
    body
}

/// `POST /start`: `action=plan` checks the request as the API would and shows it; `deploy`
/// submits it through the API (`POST /v1/deployments`, with an idempotency key per form).
pub(super) async fn start(State(state): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    if !session::same_origin(&headers) {
        return super::cross_site();
    }
    let (principal, session) = signed_or_return!(state, headers);
    if !super::form_csrf_ok(&body, &session) {
        return super::cross_site();
    }
    let mut values: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    values.remove("csrf");
    // One idempotency key per filled form: pressing Deploy twice starts one deployment.
    if values.get("key").is_none_or(String::is_empty) {
        values.insert("key".into(), session::random_token().unwrap_or_default());
    }
    let get = |name: &str| values.get(name).cloned().unwrap_or_default();
    let Some(unit) = state
        .web
        .units
        .iter()
        .find(|u| {
            u.team == get("team")
                && u.application == get("application")
                && u.environment == get("environment")
        })
        .filter(|u| principal.may_deploy_for(&u.team))
    else {
        return page(
            StatusCode::NOT_FOUND,
            "Not found · Vesemir",
            Some(&session),
            &message("There is no such unit, or your team may not deploy it."),
        );
    };
    let mut variables = serde_json::Map::new();
    for (name, value) in &values {
        if let Some(variable) = name.strip_prefix("var.") {
            if !value.is_empty() {
                variables.insert(variable.to_owned(), serde_json::Value::String(value.clone()));
            }
        }
    }
    let mut request = serde_json::json!({
        "team": unit.team, "application": unit.application, "environment": unit.environment,
        "version": get("version"), "variables": variables,
    });
    let concurrency = get("concurrency");
    if !concurrency.trim().is_empty() {
        let amount = concurrency
            .trim()
            .parse::<u64>()
            .map_or_else(|_| serde_json::json!(concurrency.trim()), |n| serde_json::json!(n));
        request["strategy"] = serde_json::json!({ "concurrency": amount });
    }
    let text = request.to_string();
    if values.get("action").map(String::as_str) != Some("deploy") {
        // The plan: the catalog's own admission, nothing stored or started.
        let notice = match state.app.catalog.admit(&text, &principal, &state.app.playbooks) {
            Ok(admitted) => {
                let stored = serde_json::to_string_pretty(&admitted.stored).unwrap_or_default();
                let hosts = match api::ports_for(&state.app, &admitted.request) {
                    Ok(ports) => match state.app.runner.preview(&admitted.request, &ports).await {
                        Ok(prepared) => planned_hosts(&prepared),
                        Err(reason) => message(&format!(
                            "The hosts could not be planned now: {}",
                            crate::server_paths::hide(&reason)
                        )),
                    },
                    Err(error) => message(&format!("The hosts could not be planned now: {}", error.detail())),
                };
                format!(
                    "<section class=\"preview\"><h2>Plan</h2><p>This is the request as it will run (secret variables as ***). Press Deploy to start it.</p>{hosts}<pre>{}</pre></section>",
                    escape(&stored)
                )
            }
            Err(denied) => {
                let problems = match denied {
                    Denied::Malformed(errors) | Denied::Invalid(errors) => errors.errors().to_vec(),
                    Denied::Team(problem) | Denied::NotInCatalog(problem) => vec![problem],
                };
                problem_list(&problems.into_iter().map(|p| (p.field, p.message)).collect::<Vec<_>>())
            }
        };
        return page(
            StatusCode::OK,
            "Plan · Vesemir",
            Some(&session),
            &unit_form(unit, &session, &values, Some(&notice)),
        );
    }
    let mut api_headers = HeaderMap::new();
    api_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(key) = HeaderValue::from_str(&get("key")) {
        api_headers.insert("idempotency-key", key);
    }
    let result = api::create(State(state.app.clone()), principal, api_headers, Ok(Bytes::from(text))).await;
    match answer(result).await {
        Ok(json) => match json["id"].as_i64() {
            Some(id) => super::see_other_to(&format!("/deployments/{id}")),
            None => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                Some(&session),
                &message("The server did not say which deployment it started."),
            ),
        },
        Err(failure) => {
            let mut notice = message(&failure.detail);
            notice.push_str(&problem_list(&failure.problems));
            let status = failure.status;
            let mut response = page(
                status,
                "Refused · Vesemir",
                Some(&session),
                &unit_form(unit, &session, &values, Some(&notice)),
            );
            *response.status_mut() = status;
            response
        }
    }
}

/// The hosts a prepared deployment would touch, batch by batch (or the canary, then the
/// sliding window) in the order they start, with their servers; skipped hosts after.
fn planned_hosts(prepared: &vesemir_core::Prepared) -> String {
    let plan = &prepared.plan;
    let sliding = prepared.request.strategy.window == vesemir_core::request::Window::Sliding;
    let mut html = format!(
        "<p>{} hosts, at most {} out of rotation at once, {}.</p><ol class=\"plan\" data-field=\"plan\">",
        plan.hosts.len(),
        plan.concurrency,
        if sliding { "in a sliding window".to_owned() } else { format!("in {} batches", plan.batches.len()) },
    );
    for (number, batch) in plan.batches.iter().enumerate() {
        let label = if number == 0 && plan.canary {
            "Canary".to_owned()
        } else if sliding {
            "Window".to_owned()
        } else {
            format!("Batch {}", number + 1)
        };
        let _ = write!(html, "<li data-batch=\"{}\"><strong>{label}</strong><ul>", number + 1);
        for planned in plan.hosts.get(batch.clone()).unwrap_or_default() {
            let _ = write!(
                html,
                "<li data-planned-host=\"{name}\">{name} <small>(server {})</small></li>",
                escape(planned.server.as_str()),
                name = escape(planned.host.name.as_str()),
            );
        }
        html.push_str("</ul></li>");
    }
    html.push_str("</ol>");
    let skipped: Vec<String> =
        plan.hosts.iter().filter(|h| h.skip).map(|h| escape(h.host.name.as_str())).collect();
    if !skipped.is_empty() {
        let _ = write!(html, "<p>Skipped (not in rotation, left as found): {}</p>", skipped.join(", "));
    }
    for warning in &prepared.warnings {
        html.push_str(&message(&crate::server_paths::hide(warning)));
    }
    html
}

fn problem_list(problems: &[(String, String)]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut html = String::from("<ul class=\"problems\" role=\"alert\">");
    for (field, text) in problems {
        let _ = write!(html, "<li><code>{}</code>: {}</li>", escape(field), escape(text));
    }
    html.push_str("</ul>");
    html
}
