//! The VM pages (issue 19) of a signed-in person, on when the server has `[vms]`: the team's
//! VMs and the form that asks only for a username and a flavor (`/vms`), one VM's page with its
//! live log, and, once it is ready, its DNS name, its address, how to log in and the line
//! `known_hosts` should hold (`/vms/{name}`), and the destroy confirmation.
//!
//! ```text
//! GET  /vms                    the team's VMs and the form (flavors from GET /v1/vm-flavors)
//! POST /vms                    csrf + owner + flavor: POST /v1/vms, 303 to /vms/{name}, or the form again
//! GET  /vms/{name}             status, facts, orders, the log (rendered: readable without the script)
//! GET  /vms/{name}/events      the API's event stream behind the session (?after= or Last-Event-ID)
//! POST /vms/{name}/cancel      csrf: POST /v1/vms/{name}/cancel
//! GET  /vms/{name}/destroy     "are you sure?", naming what is removed
//! POST /vms/{name}/destroy     csrf + confirmed=yes: DELETE /v1/vms/{name}
//! GET  /web/vms.js             the live log (the only script of these pages)
//! ```
//!
//! Like the deployment pages, every read and order goes through the API's own handlers with the
//! session's principal; these functions turn the API's JSON ([`crate::vm_wire`]) and the core's
//! [`ProvisionEvent`]s into HTML. A log line is rendered from the event's JSON by
//! [`log_parts`] here and by `logLine` in `vms.js` the same way, so a line that arrived live
//! reads like the same line after a reload.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use vesemir_core::provision::{ProvisionEvent, VmName};

use super::pages::{answer, failure_page, read_answer, signed, After};
use super::{escape, message, page, session, WebSession, WebState};
use crate::store::vms::VmStatus;
use crate::vm_wire::{VmCreateRequest, VmFlavorList, VmFlavorView, VmList, VmView};
use crate::vms::handlers::{self, VmListParams};

/// VMs listed on `/vms`, newest first.
const LIST_SIZE: i64 = 100;
/// Events rendered on a VM's page (the rest arrive live).
const EVENTS_ON_PAGE: i64 = 5_000;

/// The live log's script, served at `/web/vms.js`.
pub(super) const SCRIPT: &str = include_str!("vms.js");

/// The values a person typed in the form, kept when the form is shown again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct VmForm {
    /// The directory user the VM is for.
    pub owner: String,
    /// The flavor chosen.
    pub flavor: String,
}

/// Why the API refused a create: its detail and the problems it names by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The answer's detail, shown above the form.
    pub detail: String,
    /// `(field, message)` pairs; `owner` and `flavor` are shown next to their field, the rest
    /// above the form.
    pub problems: Vec<(String, String)>,
}

/// The form's fields: (name, label, help).
const FIELDS: [(&str, &str, &str); 2] = [
    ("owner", "Username", "Who the VM is for and who logs in to it: a user of the directory."),
    ("flavor", "Flavor", "The VM's size."),
];

/// `GET /vms`: the team's VMs and the form.
pub(super) async fn list(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let (principal, session) = signed_or_return!(state, headers);
    list_page(&state, &principal, &session, StatusCode::OK, &VmForm::default(), None).await
}

/// The VMs page, with the form filled with `values` and the API's `refusal` next to its fields.
async fn list_page(
    state: &WebState,
    principal: &crate::auth::Principal,
    session: &WebSession,
    status: StatusCode,
    values: &VmForm,
    refusal: Option<&Refusal>,
) -> Response {
    let app = State(state.app.clone());
    let params = VmListParams { owner: None, team: None, status: None, limit: Some(LIST_SIZE) };
    let result = handlers::list(app.clone(), principal.clone(), Ok(Query(params)))
        .await
        .map(IntoResponse::into_response);
    let list: VmList = match read_answer(result, "The VMs", session).await {
        Ok(list) => list,
        Err(refused) => return refused,
    };
    let result = handlers::flavors(app, principal.clone()).await.map(IntoResponse::into_response);
    let flavors: VmFlavorList = match read_answer(result, "The flavors", session).await {
        Ok(flavors) => flavors,
        Err(refused) => return refused,
    };
    let mut body = String::from("<h1>VMs</h1>");
    body.push_str(&create_form(&flavors, session, values, refusal));
    body.push_str("<h2>Your team's VMs</h2>");
    body.push_str(&list_table(&list));
    let title = if refusal.is_some() { "New VM refused · Vesemir" } else { "VMs · Vesemir" };
    page(status, title, Some(session), &body)
}

/// `POST /vms`: same origin, the session's token, then `POST /v1/vms` as the signed-in person;
/// 303 to the VM's page, or the form again with the API's problems and the values typed.
pub(super) async fn create(State(state): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    if !session::same_origin(&headers) {
        return super::cross_site();
    }
    let (principal, session) = signed_or_return!(state, headers);
    if !super::form_csrf_ok(&body, &session) {
        return super::cross_site();
    }
    let mut values = VmForm::default();
    for (name, value) in form_urlencoded::parse(&body) {
        match name.as_ref() {
            "owner" => values.owner = value.trim().to_owned(),
            "flavor" => values.flavor = value.trim().to_owned(),
            _ => {}
        }
    }
    let request = VmCreateRequest { owner: values.owner.clone(), flavor: values.flavor.clone(), name: None };
    let Ok(json) = serde_json::to_vec(&request) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            Some(&session),
            &message("The request could not be written."),
        );
    };
    let mut api_headers = HeaderMap::new();
    api_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let result =
        handlers::create(State(state.app.clone()), principal.clone(), api_headers, Ok(Bytes::from(json)))
            .await;
    match answer(result).await.map(serde_json::from_value::<VmView>) {
        Ok(Ok(vm)) => super::see_other_to(&format!("/vms/{}", vm.name)),
        Ok(Err(_)) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            Some(&session),
            &message("The server did not say which VM it is building: see the list."),
        ),
        // No VM pages on this server: the same page as any unknown one.
        Err(failure) if failure.status == StatusCode::NOT_FOUND => failure_page(&failure, &session),
        Err(failure) => {
            let refusal = Refusal { detail: failure.detail, problems: failure.problems };
            list_page(&state, &principal, &session, failure.status, &values, Some(&refusal)).await
        }
    }
}

/// `GET /vms/{name}`: the VM's status, how to log in once ready, why it failed, its orders and
/// its log (rendered here; the script follows the rest live).
pub(super) async fn vm(
    State(state): State<WebState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (principal, session) = signed_or_return!(state, headers);
    let result = handlers::get_one(State(state.app.clone()), principal.clone(), Ok(Path(name)))
        .await
        .map(IntoResponse::into_response);
    let vm: VmView = match read_answer(result, "The VM", &session).await {
        Ok(vm) => vm,
        Err(refused) => return refused,
    };
    // Authorized above: the API answered this principal.
    let events = match VmName::new(&vm.name) {
        Ok(name) => match state.app.store.vm(&name).await {
            Ok(Some(row)) => {
                state.app.store.vm_events_after(row.id, 0, EVENTS_ON_PAGE).await.unwrap_or_default()
            }
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    let may_order = principal.may_deploy_for(&vm.team);
    page(
        StatusCode::OK,
        &format!("VM {} · Vesemir", vm.name),
        Some(&session),
        &vm_page(&vm, &events, &session, may_order),
    )
}

/// `GET /vms/{name}/events`: the API's event stream behind the session; the first connection
/// says where the page's log ends with `?after=`, a reconnection sends `Last-Event-ID`.
pub(super) async fn events(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(after): Query<After>,
    mut headers: HeaderMap,
) -> Response {
    let Some((principal, _)) = signed(&state, &headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    after.resume(&mut headers);
    match handlers::events(State(state.app.clone()), principal, Ok(Path(name)), headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// `POST /vms/{name}/cancel`: same origin and the session's token, then the API's cancel.
pub(super) async fn cancel(
    State(state): State<WebState>,
    Path(name): Path<String>,
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
    let result = handlers::cancel(State(state.app.clone()), principal, Ok(Path(name.clone()))).await;
    match answer(result).await {
        Ok(_) => super::see_other_to(&format!("/vms/{}", path_segment(&name))),
        Err(failure) => failure_page(&failure, &session),
    }
}

/// `GET /vms/{name}/destroy`: "are you sure?", naming what goes.
pub(super) async fn confirm_destroy(
    State(state): State<WebState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (principal, session) = signed_or_return!(state, headers);
    let result = handlers::get_one(State(state.app.clone()), principal, Ok(Path(name)))
        .await
        .map(IntoResponse::into_response);
    let vm: VmView = match read_answer(result, "The VM", &session).await {
        Ok(vm) => vm,
        Err(refused) => return refused,
    };
    page(
        StatusCode::OK,
        &format!("Destroy {} · Vesemir", vm.name),
        Some(&session),
        &destroy_confirmation(&vm, &session),
    )
}

/// `POST /vms/{name}/destroy`: same origin, the session's token and `confirmed=yes` (else the
/// confirmation), then the API's destroy; 303 to the VM's page, whose log follows it.
pub(super) async fn destroy(
    State(state): State<WebState>,
    Path(name): Path<String>,
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
    let segment = path_segment(&name);
    if !form_urlencoded::parse(&body).any(|(k, v)| k == "confirmed" && v == "yes") {
        return super::see_other_to(&format!("/vms/{segment}/destroy"));
    }
    let result = handlers::destroy(State(state.app.clone()), principal, Ok(Path(name))).await;
    match answer(result).await {
        Ok(_) => super::see_other_to(&format!("/vms/{segment}")),
        Err(failure) => failure_page(&failure, &session),
    }
}

/// A name from a URL, safe to put back in one (a real VM name is a DNS label and unchanged).
fn path_segment(name: &str) -> String {
    form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

/// `flavor`'s size in words: `2 cores, 5 GiB memory, 40 GiB disk`.
pub(super) fn size_text(flavor: &VmFlavorView) -> String {
    let memory = if flavor.memory_mib % 1024 == 0 {
        format!("{} GiB", flavor.memory_mib / 1024)
    } else {
        format!("{} MiB", flavor.memory_mib)
    };
    format!(
        "{} core{}, {memory} memory, {} GiB disk",
        flavor.cores,
        if flavor.cores == 1 { "" } else { "s" },
        flavor.disk_gib
    )
}

/// The create form: only the username and the flavor, with `values` kept and the problems of
/// `refusal` next to the fields they name.
pub(super) fn create_form(
    flavors: &VmFlavorList,
    session: &WebSession,
    values: &VmForm,
    refusal: Option<&Refusal>,
) -> String {
    let mut html =
        String::from("<section class=\"new-vm\" aria-labelledby=\"new-vm\"><h2 id=\"new-vm\">New VM</h2>");
    if flavors.flavors.is_empty() {
        html.push_str(
            "<p>Your team may create no VM here. Ask the operator to allow your team a flavor.</p></section>",
        );
        return html;
    }
    let field_problems = |field: &str| -> Vec<&str> {
        refusal.map_or_else(Vec::new, |r| {
            r.problems.iter().filter(|(f, _)| f == field).map(|(_, m)| m.as_str()).collect()
        })
    };
    if let Some(refusal) = refusal {
        let others: Vec<&(String, String)> =
            refusal.problems.iter().filter(|(f, _)| !FIELDS.iter().any(|(name, ..)| name == f)).collect();
        // Problems that all belong to a field are told there; the detail would repeat them.
        let summary = if !refusal.problems.is_empty() && others.is_empty() {
            "The VM was not created: see the problem below."
        } else {
            refusal.detail.as_str()
        };
        let _ = write!(html, "<p role=\"alert\" class=\"refused\">{}</p>", escape(summary));
        if !others.is_empty() {
            html.push_str("<ul class=\"problems\">");
            for (field, text) in others {
                let _ = write!(html, "<li><code>{}</code>: {}</li>", escape(field), escape(text));
            }
            html.push_str("</ul>");
        }
    }
    let _ = write!(
        html,
        "<p>The VM is named after the username (for <code>alice</code>: <code>alice-1</code>, then <code>alice-2</code>…) and gets its own DNS name; at most {} per person.</p>\
         <form method=\"post\" action=\"/vms\" class=\"start vm-form\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        flavors.max_per_owner,
        escape(&session.csrf),
    );
    for (name, label, help) in FIELDS {
        let problems = field_problems(name);
        let described =
            if problems.is_empty() { format!("{name}-help") } else { format!("{name}-help {name}-problem") };
        let invalid = if problems.is_empty() { "" } else { " aria-invalid=\"true\"" };
        let _ = write!(html, "<label for=\"{name}\">{label}</label>");
        if name == "owner" {
            let _ = write!(
                html,
                "<input id=\"owner\" name=\"owner\" required autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\" value=\"{}\" aria-describedby=\"{described}\"{invalid}>",
                escape(&values.owner)
            );
        } else {
            let _ = write!(
                html,
                "<select id=\"flavor\" name=\"flavor\" required aria-describedby=\"{described}\"{invalid}>"
            );
            for flavor in &flavors.flavors {
                let selected = if flavor.name == values.flavor { " selected" } else { "" };
                let _ = write!(
                    html,
                    "<option value=\"{n}\"{selected}>{n}: {}</option>",
                    escape(&size_text(flavor)),
                    n = escape(&flavor.name),
                );
            }
            // A flavor typed that is not (or no longer) offered stays visible with its problem.
            if !values.flavor.is_empty() && !flavors.flavors.iter().any(|f| f.name == values.flavor) {
                let _ = write!(html, "<option value=\"{0}\" selected>{0}</option>", escape(&values.flavor));
            }
            html.push_str("</select>");
        }
        let _ = write!(html, "<small id=\"{name}-help\" class=\"help\">{help}</small>");
        if !problems.is_empty() {
            let _ = write!(
                html,
                "<p id=\"{name}-problem\" class=\"problem\" data-problem=\"{name}\">{}</p>",
                escape(&problems.join(" "))
            );
        }
    }
    html.push_str(
        "<div class=\"orders\"><button type=\"submit\">Create the VM</button></div></form></section>",
    );
    html
}

/// The team's VMs, newest first.
pub(super) fn list_table(list: &VmList) -> String {
    if list.vms.is_empty() {
        return "<p>Your team has no VM yet.</p>".to_owned();
    }
    let mut html = String::from(
        "<div class=\"scroll\"><table class=\"vms\"><caption>Your team's VMs, newest first</caption><thead><tr><th scope=\"col\">Name</th>\
         <th scope=\"col\">Owner</th><th scope=\"col\">Flavor</th><th scope=\"col\">Status</th><th scope=\"col\">DNS name</th><th scope=\"col\">Created</th></tr></thead><tbody>",
    );
    for vm in &list.vms {
        let _ = write!(
            html,
            "<tr data-vm-row=\"{n}\"><th scope=\"row\"><a href=\"/vms/{n}\">{n}</a></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&vm.owner),
            escape(&vm.flavor),
            escape(vm.status.as_str()),
            if vm.status == VmStatus::Ready {
                format!("<code>{}</code>", escape(&vm.fqdn))
            } else {
                escape(&vm.fqdn)
            },
            time(&vm.created_at),
            n = escape(&vm.name),
        );
    }
    html.push_str("</tbody></table></div>");
    html
}

/// A UTC time the page script shows in the viewer's zone.
fn time(rfc3339: &str) -> String {
    format!("<time datetime=\"{0}\">{0}</time>", escape(rfc3339))
}

/// A value someone copies: a read-only field with a label (selectable and copyable without the
/// script; the script adds a Copy button).
fn copyable(id: &str, label: &str, value: &str) -> String {
    format!(
        "<label for=\"{id}\">{label}</label><div class=\"copy\"><input id=\"{id}\" class=\"copyable\" readonly value=\"{}\" size=\"{}\" spellcheck=\"false\" data-copy></div>",
        escape(value),
        value.chars().count().clamp(20, 90),
    )
}

/// The parts of a VM's page that change with its status: the status line, how to log in (once
/// ready), why it failed and what is left (after a failure), its facts and its orders. The
/// script replaces this block with a fresh copy when the VM's status changes.
pub(super) fn live_block(vm: &VmView, session: &WebSession, may_order: bool) -> String {
    let mut html = format!(
        "<section data-vm-live data-status=\"{status}\"><p class=\"summary\">Status: <strong data-field=\"status\">{status}</strong>{}</p>",
        match vm.status {
            VmStatus::Creating => " — being built; the log below follows it.",
            VmStatus::Destroying => " — being taken down; the log below follows it.",
            VmStatus::Ready => " — built and verified: its name resolves, SSH answers with the key below and Chef knows it.",
            VmStatus::Failed => " — its create failed; what was built was taken down again.",
            VmStatus::Cancelled => " — cancelled; what was built was taken down again.",
            VmStatus::Destroyed => " — taken down.",
            VmStatus::Interrupted => " — the server stopped before its create or destroy ended.",
        },
        status = escape(vm.status.as_str()),
    );
    if vm.status == VmStatus::Ready {
        html.push_str("<section class=\"login\" aria-labelledby=\"login-title\"><h2 id=\"login-title\">How to log in</h2>");
        let _ = write!(
            html,
            "<dl class=\"facts\"><dt>DNS name</dt><dd><code data-field=\"fqdn\">{}</code></dd>",
            escape(&vm.fqdn)
        );
        if let Some(address) = &vm.address {
            let _ = write!(
                html,
                "<dt>Address</dt><dd><code data-field=\"address\">{}</code></dd>",
                escape(address)
            );
        }
        html.push_str("</dl><div class=\"start\">");
        if let Some(login) = &vm.login {
            html.push_str(&copyable("login", "Log in with", login));
        }
        if let Some(key) = &vm.ssh_host_key {
            html.push_str(&copyable(
                "known-hosts",
                "Its host key, as a line of <code>~/.ssh/known_hosts</code>",
                &known_hosts_line(vm, key),
            ));
        }
        html.push_str("</div><p><small>The host key was recorded when the VM first answered SSH: if SSH ever shows another, do not log in; ask the operator.</small></p></section>");
    }
    if let Some(failure) = &vm.failure {
        let _ = write!(
            html,
            "<section class=\"failure\" aria-labelledby=\"failure-title\"><h2 id=\"failure-title\">Why it failed</h2><p role=\"alert\">Step <code data-field=\"failed-step\">{}</code> failed: <span data-field=\"reason\">{}</span></p></section>",
            escape(&failure.step),
            escape(&failure.reason)
        );
    }
    if !vm.left_behind.is_empty() {
        let _ = write!(
            html,
            "<p role=\"alert\" data-field=\"left-behind\">Parts left behind (their undo failed; they are still there): {}.</p>",
            vm.left_behind.iter().map(|s| format!("<code>{}</code>", escape(s))).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(next) = &vm.next {
        let _ = write!(html, "<p data-field=\"next\"><strong>What to do:</strong> {}</p>", escape(next));
    } else if vm.failure.is_some() || vm.status == VmStatus::Cancelled {
        html.push_str("<p data-field=\"next\"><strong>What to do:</strong> nothing is left to clean up; create a new VM from <a href=\"/vms\">the VMs page</a> (if the same step fails again, tell the operator its reason).</p>");
    }
    let _ = write!(
        html,
        "<dl class=\"facts\"><dt>Owner</dt><dd>{}</dd><dt>Team</dt><dd>{}</dd><dt>Flavor</dt><dd>{}</dd>\
         <dt>DNS name</dt><dd>{}</dd><dt>Hypervisor</dt><dd>{}</dd><dt>Asked by</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd><dt>Ended</dt><dd>{}</dd></dl>",
        escape(&vm.owner),
        escape(&vm.team),
        escape(&vm.flavor),
        escape(&vm.fqdn),
        escape(vm.hypervisor.as_deref().unwrap_or("not chosen yet")),
        escape(&vm.requested_by),
        time(&vm.created_at),
        vm.finished_at.as_deref().map_or_else(|| "not yet".to_owned(), time),
    );
    html.push_str(&orders(vm, session, may_order));
    html.push_str("</section>");
    html
}

/// `known_hosts`'s line for the VM: its DNS name and address, then the key.
pub(super) fn known_hosts_line(vm: &VmView, key: &str) -> String {
    match &vm.address {
        Some(address) => format!("{},{} {key}", vm.fqdn, address),
        None => format!("{} {key}", vm.fqdn),
    }
}

/// Cancel while it is being built (the API offers `links.cancel` then); Destroy (through a
/// confirmation) while it holds parts and nothing runs.
fn orders(vm: &VmView, session: &WebSession, may_order: bool) -> String {
    let mut html = String::from("<div class=\"orders\">");
    if may_order {
        let name = escape(&vm.name);
        if vm.links.cancel.is_some() {
            let _ = write!(
                html,
                "<form method=\"post\" action=\"/vms/{name}/cancel\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\" class=\"danger\">Cancel the create</button></form>",
                escape(&session.csrf)
            );
        }
        if vm.status.holds_resources() && !vm.status.is_running() {
            let _ = write!(html, "<a class=\"button danger\" href=\"/vms/{name}/destroy\">Destroy…</a>");
        }
    }
    html.push_str("<a href=\"/vms\">All VMs</a></div>");
    html
}

/// The confirmation of a destroy, naming what goes.
pub(super) fn destroy_confirmation(vm: &VmView, session: &WebSession) -> String {
    let name = escape(&vm.name);
    let mut parts = vec![format!(
        "the virtual machine <code>{name}</code> and its disk{} — everything on it is lost",
        vm.hypervisor.as_deref().map_or_else(String::new, |h| format!(" on <code>{}</code>", escape(h)))
    )];
    let records = match &vm.address {
        Some(address) => format!(
            "the DNS records of <code>{}</code> (A and PTR of <code>{}</code>)",
            escape(&vm.fqdn),
            escape(address)
        ),
        None => format!("the DNS records of <code>{}</code>", escape(&vm.fqdn)),
    };
    parts.push(records);
    parts.push(format!("its node and client in Chef (<code>{}</code>)", escape(&vm.fqdn)));
    parts.push(vm.address.as_deref().map_or_else(
        || "its address reservation".to_owned(),
        |a| format!("its address reservation (<code>{}</code> becomes free)", escape(a)),
    ));
    let mut html = format!("<h1>Destroy VM {name}?</h1><p>This removes, for good:</p><ul class=\"removed\">");
    for part in parts {
        let _ = write!(html, "<li>{part}</li>");
    }
    let _ = write!(
        html,
        "</ul><p>{} will no longer be able to log in to it.</p>\
         <form method=\"post\" action=\"/vms/{name}/destroy\" class=\"orders\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
         <button type=\"submit\" class=\"danger\">Destroy {name}</button><a href=\"/vms/{name}\">Back</a></form>",
        escape(&vm.owner),
        escape(&session.csrf),
    );
    html
}

/// A whole VM page: the live block and the log of `events` (oldest first). `data-running`
/// tells the script to follow the stream from `data-last-event`.
pub(super) fn vm_page(
    vm: &VmView,
    events: &[ProvisionEvent],
    session: &WebSession,
    may_order: bool,
) -> String {
    let last = events.last().map_or(0, |e| e.seq);
    let mut html = format!(
        "<div data-vm=\"{name}\" data-last-event=\"{last}\" data-running=\"{}\"><h1>VM {name}</h1>",
        vm.status.is_running(),
        name = escape(&vm.name),
    );
    html.push_str(&live_block(vm, session, may_order));
    html.push_str(
        "<h2 id=\"log-title\">Log</h2><p><small>Times are since the create (or the destroy) started.</small></p>\
         <ol class=\"events vm-log\" role=\"log\" aria-labelledby=\"log-title\" data-field=\"events\">",
    );
    for event in events {
        html.push_str(&log_item(event));
    }
    html.push_str("</ol></div><script src=\"/web/vms.js\" defer></script>");
    html
}

/// One line of the log as HTML (`vms.js` builds the same element).
pub(super) fn log_item(event: &ProvisionEvent) -> String {
    let json = serde_json::to_value(event).unwrap_or(Value::Null);
    let kind = json["type"].as_str().unwrap_or("event");
    let (words, detail) = log_parts(&json);
    let bad = if is_bad(&json) { " class=\"bad\"" } else { "" };
    format!(
        "<li data-seq=\"{}\" data-kind=\"{}\"{bad}><span class=\"time\">{}</span> <span class=\"kind\">{}</span> {}</li>",
        event.seq,
        escape(kind),
        tenths(u64::try_from(event.elapsed.as_millis()).unwrap_or(u64::MAX)),
        escape(&words),
        escape(&detail),
    )
}

/// `+12.3 s` from milliseconds, rounded to tenths with integers (the script does the same).
pub(super) fn tenths(ms: u64) -> String {
    let tenths = ms.saturating_add(50) / 100;
    format!("+{}.{} s", tenths / 10, tenths % 10)
}

/// Whether a line tells of a failure (shown in the failure colour).
fn is_bad(event: &Value) -> bool {
    match event["type"].as_str() {
        Some("step_failed" | "undo_failed") => true,
        Some("finished") => event["outcome"]["result"] == "failed",
        _ => false,
    }
}

/// A log line's kind in words and its detail, from an event's JSON (the core's
/// [`ProvisionEvent`] on the wire). `logLine` in `vms.js` is this function in JavaScript.
pub(super) fn log_parts(event: &Value) -> (String, String) {
    let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
    let kind = event["type"].as_str().unwrap_or("event");
    let detail = match kind {
        "started" => {
            let flavor = &event["flavor"];
            if event["mode"] == "destroy" {
                format!("destroy {}", text("fqdn"))
            } else {
                format!(
                    "create {} ({}: {} cores, {} MiB, {} GiB)",
                    text("fqdn"),
                    flavor["name"].as_str().unwrap_or_default(),
                    flavor["cores"],
                    flavor["memory_mib"],
                    flavor["disk_gib"]
                )
            }
        }
        "step_started" | "step_done" | "undo_done" => text("step"),
        "placed" => format!(
            "on {} at {}",
            event["placement"]["hypervisor"].as_str().unwrap_or_default(),
            event["placement"]["address"].as_str().unwrap_or_default()
        ),
        "host_key_recorded" => format!(
            "{} ({})",
            text("key"),
            if event["confirmed_by_console"] == true {
                "the console showed the same key"
            } else {
                "not checked against the console"
            }
        ),
        "output" => {
            let stream = if event["stream"] == "stderr" { " stderr" } else { "" };
            format!("[{}{stream}] {}", text("step"), text("text"))
        }
        "step_failed" => format!(
            "{}: {}{}",
            text("step"),
            text("reason"),
            if event["partial"] == true { " (it may have changed something: undone too)" } else { "" }
        ),
        "cancel_requested" => "the steps done are undone next".to_owned(),
        "undo_started" => format!("{} (attempt {})", text("step"), event["attempt"]),
        "undo_failed" => format!(
            "{}: {} ({})",
            text("step"),
            text("reason"),
            if event["will_retry"] == true { "tried again" } else { "left behind" }
        ),
        "finished" => {
            let outcome = &event["outcome"];
            let mut line = match outcome["result"].as_str().unwrap_or_default() {
                "failed" => format!(
                    "failed at {}: {}",
                    outcome["step"].as_str().unwrap_or_default(),
                    outcome["reason"].as_str().unwrap_or_default()
                ),
                other => other.to_owned(),
            };
            let left: Vec<&str> = outcome["left_behind"]
                .as_array()
                .map(|steps| steps.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !left.is_empty() {
                let _ = write!(line, "; left behind: {}", left.join(", "));
            }
            line
        }
        // A kind this page does not know yet: its fields as they are.
        _ => event
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "type" | "seq" | "elapsed"))
                    .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    };
    (kind.replace('_', " "), detail)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vesemir_core::provision::{ProvisionEventKind, ProvisionOutcome, Step};

    use super::*;
    use crate::vm_wire::{VmFailure, VmLinks};

    fn session() -> WebSession {
        WebSession {
            id_sha256: "h".into(),
            csrf: "tok\"en".into(),
            name: "bob".into(),
            teams: Default::default(),
            roles: Default::default(),
            created_ms: 0,
            expires_ms: 1,
        }
    }

    fn view(status: VmStatus) -> VmView {
        VmView {
            name: "alice-1".into(),
            owner: "alice".into(),
            team: "web".into(),
            flavor: "small".into(),
            status,
            fqdn: "alice-1.lab.test".into(),
            address: Some("10.0.0.5".into()),
            hypervisor: Some("hv1".into()),
            ssh_host_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB".into()),
            login: Some("ssh alice@alice-1.lab.test".into()),
            requested_by: "bob".into(),
            created_at: "2026-12-01T10:00:00Z".into(),
            finished_at: None,
            failure: None,
            left_behind: Vec::new(),
            next: None,
            links: VmLinks {
                self_: "/v1/vms/alice-1".into(),
                events: "/v1/vms/alice-1/events".into(),
                cancel: (status == VmStatus::Creating).then(|| "/v1/vms/alice-1/cancel".into()),
                page: "/vms/alice-1".into(),
            },
        }
    }

    fn flavors() -> VmFlavorList {
        VmFlavorList {
            flavors: vec![
                VmFlavorView { name: "small".into(), cores: 2, memory_mib: 5120, disk_gib: 40 },
                VmFlavorView { name: "tiny".into(), cores: 1, memory_mib: 512, disk_gib: 10 },
            ],
            max_per_owner: 2,
        }
    }

    fn event(seq: u64, ms: u64, kind: ProvisionEventKind) -> ProvisionEvent {
        ProvisionEvent { seq, elapsed: Duration::from_millis(ms), kind }
    }

    #[test]
    fn the_form_asks_only_for_the_username_and_a_flavor_with_its_size() {
        let html = create_form(&flavors(), &session(), &VmForm::default(), None);
        assert_eq!(html.matches("<label ").count(), 2, "{html}");
        assert!(
            html.contains("<label for=\"owner\">Username</label><input id=\"owner\" name=\"owner\" required"),
            "{html}"
        );
        assert!(
            html.contains("<option value=\"small\">small: 2 cores, 5 GiB memory, 40 GiB disk</option>"),
            "{html}"
        );
        assert!(
            html.contains("<option value=\"tiny\">tiny: 1 core, 512 MiB memory, 10 GiB disk</option>"),
            "{html}"
        );
        assert!(html.contains("name=\"csrf\" value=\"tok&quot;en\""), "the token, escaped: {html}");
        assert!(!html.contains("role=\"alert\""), "{html}");
    }

    #[test]
    fn a_refusal_shows_next_to_the_field_it_names_and_keeps_the_values() {
        let refusal = Refusal {
            detail: "the request is invalid".into(),
            problems: vec![
                ("owner".into(), "zed is not a user of the directory".into()),
                ("team".into(), "other".into()),
            ],
        };
        let values = VmForm { owner: "zed<".into(), flavor: "tiny".into() };
        let html = create_form(&flavors(), &session(), &values, Some(&refusal));
        assert!(
            html.contains(
                "value=\"zed&lt;\" aria-describedby=\"owner-help owner-problem\" aria-invalid=\"true\">"
            ),
            "{html}"
        );
        assert!(html.contains("<p id=\"owner-problem\" class=\"problem\" data-problem=\"owner\">zed is not a user of the directory</p>"), "{html}");
        assert!(html.contains("<option value=\"tiny\" selected>"), "{html}");
        assert!(html.contains("<p role=\"alert\" class=\"refused\">the request is invalid</p>"), "{html}");
        assert!(
            html.contains("<li><code>team</code>: other</li>"),
            "a problem of no field above the form: {html}"
        );
        assert!(!html.contains("flavor-problem"), "{html}");
    }

    #[test]
    fn a_flavor_no_longer_offered_stays_selected_with_its_problem() {
        let refusal = Refusal {
            detail: "refused".into(),
            problems: vec![("flavor".into(), "your team may not create huge".into())],
        };
        let values = VmForm { owner: "alice".into(), flavor: "huge".into() };
        let html = create_form(&flavors(), &session(), &values, Some(&refusal));
        assert!(html.contains("<option value=\"huge\" selected>huge</option>"), "{html}");
        assert!(html.contains("data-problem=\"flavor\">your team may not create huge</p>"), "{html}");
        assert!(
            html.contains(
                "<p role=\"alert\" class=\"refused\">The VM was not created: see the problem below.</p>"
            ),
            "the detail is not repeated above: {html}"
        );
    }

    #[test]
    fn no_flavor_no_form() {
        let none = VmFlavorList { flavors: Vec::new(), max_per_owner: 1 };
        let html = create_form(&none, &session(), &VmForm::default(), None);
        assert!(!html.contains("<form"), "{html}");
        assert!(html.contains("Your team may create no VM here"), "{html}");
    }

    #[test]
    fn a_ready_vm_shows_its_name_address_login_and_known_hosts_line() {
        let html = live_block(&view(VmStatus::Ready), &session(), true);
        assert!(html.contains("<code data-field=\"fqdn\">alice-1.lab.test</code>"), "{html}");
        assert!(html.contains("<code data-field=\"address\">10.0.0.5</code>"), "{html}");
        assert!(
            html.contains("id=\"login\" class=\"copyable\" readonly value=\"ssh alice@alice-1.lab.test\""),
            "{html}"
        );
        assert!(
            html.contains("value=\"alice-1.lab.test,10.0.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\""),
            "{html}"
        );
        assert!(html.contains("href=\"/vms/alice-1/destroy\">Destroy…</a>"), "{html}");
        assert!(!html.contains("Cancel"), "{html}");
    }

    #[test]
    fn a_vm_being_built_offers_cancel_and_no_login() {
        let html = live_block(&view(VmStatus::Creating), &session(), true);
        assert!(html.contains("action=\"/vms/alice-1/cancel\""), "{html}");
        assert!(!html.contains("How to log in"), "{html}");
        assert!(!html.contains("Destroy"), "{html}");
        let read_only = live_block(&view(VmStatus::Creating), &session(), false);
        assert!(!read_only.contains("<form"), "a reader gets no orders: {read_only}");
    }

    #[test]
    fn a_failure_names_the_step_the_reason_the_parts_left_and_what_to_do() {
        let mut vm = view(VmStatus::Failed);
        vm.failure = Some(VmFailure { step: "dns".into(), reason: "TSIG refused <bad>".into() });
        vm.left_behind = vec!["disk".into()];
        vm.next = Some("ask an operator to delete the disk on hv1".into());
        let html = live_block(&vm, &session(), true);
        assert!(html.contains("Step <code data-field=\"failed-step\">dns</code> failed: <span data-field=\"reason\">TSIG refused &lt;bad&gt;</span>"), "{html}");
        assert!(html.contains("<code>disk</code>"), "{html}");
        assert!(html.contains("ask an operator to delete the disk on hv1"), "{html}");
        assert!(!html.contains("How to log in"), "{html}");
        assert!(!html.contains("Destroy"), "a failed VM holds nothing to destroy: {html}");
    }

    #[test]
    fn the_destroy_confirmation_names_what_is_removed() {
        let html = destroy_confirmation(&view(VmStatus::Ready), &session());
        for part in [
            "<code>alice-1</code> and its disk on <code>hv1</code>",
            "A and PTR of <code>10.0.0.5</code>",
            "in Chef",
            "address reservation",
        ] {
            assert!(html.contains(part), "{part}: {html}");
        }
        assert!(html.contains("name=\"confirmed\" value=\"yes\""), "{html}");
        assert!(html.contains("action=\"/vms/alice-1/destroy\""), "{html}");
    }

    #[test]
    fn log_lines_tell_each_step_with_its_time() {
        let step = |seq, ms, kind| log_item(&event(seq, ms, kind));
        assert_eq!(
            step(2, 1249, ProvisionEventKind::StepStarted { step: Step::WaitSsh }),
            "<li data-seq=\"2\" data-kind=\"step_started\"><span class=\"time\">+1.2 s</span> <span class=\"kind\">step started</span> wait_ssh</li>"
        );
        assert!(step(3, 1250, ProvisionEventKind::StepDone { step: Step::WaitSsh })
            .contains("+1.3 s</span> <span class=\"kind\">step done</span> wait_ssh"));
        let failed = step(
            4,
            0,
            ProvisionEventKind::StepFailed { step: Step::Dns, reason: "refused".into(), partial: true },
        );
        assert!(failed.contains("class=\"bad\""), "{failed}");
        assert!(failed.contains("dns: refused (it may have changed something: undone too)"), "{failed}");
        let output = step(
            5,
            0,
            ProvisionEventKind::Output {
                step: Step::Bootstrap,
                stream: vesemir_core::ports::OutputStream::Stderr,
                text: "<warn>".into(),
            },
        );
        assert!(output.contains("[bootstrap stderr] &lt;warn&gt;"), "{output}");
        let undo = step(
            6,
            0,
            ProvisionEventKind::UndoFailed { step: Step::Disk, reason: "gone".into(), will_retry: false },
        );
        assert!(undo.contains("undo failed</span> disk: gone (left behind)"), "{undo}");
        let end = step(
            7,
            0,
            ProvisionEventKind::Finished {
                outcome: ProvisionOutcome::Failed {
                    step: Step::Dns,
                    reason: "refused".into(),
                    left_behind: vec![Step::Disk],
                },
            },
        );
        assert!(end.contains("finished</span> failed at dns: refused; left behind: disk"), "{end}");
        assert!(end.contains("class=\"bad\""), "{end}");
    }

    #[test]
    fn tenths_round_half_up_with_integers() {
        assert_eq!(tenths(0), "+0.0 s");
        assert_eq!(tenths(49), "+0.0 s");
        assert_eq!(tenths(250), "+0.3 s");
        assert_eq!(tenths(61_999), "+62.0 s");
    }

    #[test]
    fn the_page_follows_only_a_running_vm_and_renders_its_log() {
        let events = [event(1, 0, ProvisionEventKind::StepStarted { step: Step::Reserve })];
        let html = vm_page(&view(VmStatus::Creating), &events, &session(), true);
        assert!(html.contains("data-vm=\"alice-1\" data-last-event=\"1\" data-running=\"true\""), "{html}");
        assert!(html.contains("role=\"log\""), "{html}");
        assert!(html.contains("step started</span> reserve"), "{html}");
        let ready = vm_page(&view(VmStatus::Ready), &[], &session(), true);
        assert!(ready.contains("data-last-event=\"0\" data-running=\"false\""), "{ready}");
    }

    #[test]
    fn the_list_links_each_vm() {
        let list = VmList { vms: vec![view(VmStatus::Ready)] };
        let html = list_table(&list);
        assert!(html.contains("<a href=\"/vms/alice-1\">alice-1</a>"), "{html}");
        assert!(html.contains("<td>ready</td><td><code>alice-1.lab.test</code></td>"), "{html}");
    }
}
