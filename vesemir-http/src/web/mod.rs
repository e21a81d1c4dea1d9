//! The web page for people: directory sign-in and sessions (served when the config has an
//! `[ldap]` section). A session is just another [`Principal`] (source
//! [`PrincipalSource::Directory`]), with the teams and roles its directory groups map to;
//! bearer tokens keep working for the API and the CLI, which never read the cookie.
//!
//! ```text
//! GET  /            who is signed in (or a redirect to /sign-in)
//! GET  /sign-in     the form
//! POST /sign-in     username + password: 303 to / with a new session, or the form again
//! POST /sign-out    csrf: revokes the session (in the store: on every instance)
//! GET  /deployments[?application=&environment=&status=&before=]
//! GET  /deployments/{id}             the deployment's page
//! GET  /deployments/{id}/view.json   the API's view, for the script
//! GET  /deployments/{id}/events      the API's event stream (?after= or Last-Event-ID)
//! GET  /deployments/{id}/{order}     "are you sure?" for cancel, retry, restore, rollback
//! POST /deployments/{id}/{order}     csrf (+ confirmed=yes): the API's handler for it
//! GET  /start[?team=&application=&environment=]   the units, or one unit's form
//! POST /start       csrf + the form + action=plan|deploy
//! GET  /vms, /vms/{name}...   the VM pages (issue 19; see the vms module)
//! GET  /web/style.css /web/page.js /web/vms.js
//! ```
//!
//! Sessions live in the [`Store`](crate::store::Store), so every instance on one database
//! shares them; see [`session`] for the cookie, CSRF and origin rules and [`limit`] for the
//! rate limits. Messages: a wrong password and an unknown user get the same text; a directory
//! that cannot be reached says so.

/// The signed-in person of a page's request, or the answer to give instead (a redirect to the
/// sign-in form). Defined before the page modules, which use it.
macro_rules! signed_or_return {
    ($state:expr, $headers:expr) => {
        match super::signed_in(&$state, &$headers).await {
            Ok(Some(found)) => found,
            Ok(None) => return super::see_other("/sign-in"),
            Err(response) => return response,
        }
    };
}

pub mod config;
pub mod limit;
mod pages;
pub mod session;
mod vms;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use vesemir_core::request::{FieldError, ValidationErrors};
use vesemir_ldap::{Directory, DirectoryError, Secret};

use crate::api::AppState;
use crate::auth::{Principal, PrincipalSource};
use crate::store::WebSession;
pub use config::LdapConfig;
use session::CookiePolicy;

/// The largest sign-in form accepted.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// What the web page needs besides the API's state: the directory, the group mapping, the
/// cookie policy and the sign-in limits.
#[derive(Debug)]
pub struct Web {
    config: LdapConfig,
    directory: Directory,
    cookie: CookiePolicy,
    limiter: limit::Limiter,
    /// The catalog's units, for the start form (admission is still the catalog's).
    units: Vec<crate::catalog::UnitConfig>,
    /// Whether the server has `[vms]`: the VM pages and their link in the navigation.
    vms: bool,
}

impl Web {
    /// From the `[ldap]` section: reads the service password file (once, here) and checks the
    /// directory settings. `listen` decides the cookie's `Secure` default.
    pub fn new(
        config: &LdapConfig,
        listen: SocketAddr,
        units: &[crate::catalog::UnitConfig],
    ) -> Result<Self, ValidationErrors> {
        let password = match &config.bind_password_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ValidationErrors::one(FieldError::new(
                        "ldap.bind_password_file",
                        format!("cannot be read: {}", e.kind()),
                    ))
                })?;
                Some(Secret::new(text.trim_end_matches(['\n', '\r'])))
            }
        };
        let directory = Directory::new(config.directory(password))
            .map_err(|e| ValidationErrors::one(FieldError::new("ldap", e.to_string())))?;
        let secure = config.secure_cookie.unwrap_or(!listen.ip().is_loopback());
        Ok(Self {
            directory,
            cookie: CookiePolicy { secure, same_site: config.same_site },
            limiter: limit::Limiter::new(
                config.failure_window,
                config.max_failures_per_user,
                config.max_failures_per_address,
            ),
            config: config.clone(),
            units: units.to_vec(),
            vms: false,
        })
    }

    /// With the VM pages (the server has `[vms]`, issue 19).
    #[must_use]
    pub fn with_vms(mut self, on: bool) -> Self {
        self.vms = on;
        self
    }
}

impl Web {
    /// The directory people sign in against (VM owners are looked up in it too).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }
}

/// How often expired and revoked sessions and old failed sign-ins are deleted.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes expired and revoked sessions, and failed sign-ins older than `web`'s window, every
/// hour while the store lives.
pub async fn prune_sessions(store: std::sync::Weak<dyn crate::store::Store>, web: Arc<Web>) {
    let window_ms = i64::try_from(web.limiter.window().as_millis()).unwrap_or(i64::MAX);
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let Some(store) = store.upgrade() else { return };
        let now = crate::clock::now_ms();
        match store.prune_sessions(now).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "deleted expired and revoked sessions"),
            Err(e) => tracing::warn!(error = %e, "deleting expired sessions"),
        }
        match store.prune_sign_in_failures(now.saturating_sub(window_ms)).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "deleted failed sign-ins out of the window"),
            Err(e) => tracing::warn!(error = %e, "deleting old failed sign-ins"),
        }
    }
}

#[derive(Clone)]
struct WebState {
    app: AppState,
    web: Arc<Web>,
}

tokio::task_local! {
    /// What the header's navigation of the request being answered shows: set by [`router`]'s
    /// layer, read by [`page`] (a page made outside a request shows no VM link).
    static NAV: Nav;
}

/// The server's optional pages, for the navigation.
#[derive(Debug, Clone, Copy)]
struct Nav {
    /// The VM pages are on.
    vms: bool,
}

/// The web page's routes.
pub fn router(app: AppState, web: Arc<Web>) -> Router {
    let nav = Nav { vms: web.vms };
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/web/style.css", get(style))
        .route("/web/page.js", get(script))
        .route("/web/vms.js", get(vms_script))
        .route("/deployments", get(pages::list))
        .route("/deployments/{id}", get(pages::deployment))
        .route("/deployments/{id}/view.json", get(pages::view_json))
        .route("/deployments/{id}/events", get(pages::events))
        .route("/deployments/{id}/{order}", get(pages::confirm_order).post(pages::give_order))
        .route("/start", get(pages::start_form).post(pages::start))
        .route("/vms", get(vms::list).post(vms::create))
        .route("/vms/{name}", get(vms::vm))
        .route("/vms/{name}/events", get(vms::events))
        .route("/vms/{name}/cancel", post(vms::cancel))
        .route("/vms/{name}/destroy", get(vms::confirm_destroy).post(vms::destroy))
        .layer(axum::middleware::from_fn(move |request: Request, next: axum::middleware::Next| {
            NAV.scope(nav, next.run(request))
        }))
        .with_state(WebState { app, web })
}

/// The signed-in principal of a request and its session, if its cookie names a live one.
async fn signed_in(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Option<(Principal, WebSession)>, Response> {
    let Some(id) = session::cookie_id(headers) else { return Ok(None) };
    let found = state.app.store.session(&session::id_hash(&id), crate::clock::now_ms()).await;
    match found {
        Ok(Some(session)) => Ok(Some((principal_of(&session), session))),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "reading a session");
            Err(page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                None,
                &message("The server's database cannot be reached; try again in a minute."),
            ))
        }
    }
}

/// The principal a session stands for.
pub fn principal_of(session: &WebSession) -> Principal {
    Principal {
        name: session.name.clone(),
        source: PrincipalSource::Directory,
        teams: session.teams.iter().cloned().collect(),
        roles: session.roles.iter().copied().collect(),
    }
}

async fn home(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let (principal, session) = match signed_in(&state, &headers).await {
        Ok(Some(found)) => found,
        Ok(None) => return see_other("/sign-in"),
        Err(response) => return response,
    };
    let teams: Vec<&str> = principal.teams.iter().map(String::as_str).collect();
    let roles: Vec<String> = principal.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
    let body = format!(
        "<p>Signed in as <strong>{}</strong>.</p><p>Teams: {}. Roles: {}.</p>\
         <p><a href=\"/deployments\">Deployments</a> · <a href=\"/start\">Start a deployment</a>{}</p>",
        escape(&principal.name),
        escape(&if teams.is_empty() { "none".to_owned() } else { teams.join(", ") }),
        escape(&roles.join(", ")),
        if state.web.vms { " · <a href=\"/vms\">VMs</a>" } else { "" },
    );
    page(StatusCode::OK, "Vesemir", Some(&session), &body)
}

async fn sign_in_form(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(Some(_)) => see_other("/"),
        Ok(None) => sign_in_page(StatusCode::OK, None, ""),
        Err(response) => response,
    }
}

async fn sign_in(State(state): State<WebState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !session::same_origin(&parts.headers) {
        return cross_site();
    }
    let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return sign_in_page(StatusCode::PAYLOAD_TOO_LARGE, Some("The form is too large."), "");
    };
    let mut username = String::new();
    let mut password = String::new();
    for (name, value) in form_urlencoded::parse(&bytes) {
        match name.as_ref() {
            "username" => username = value.trim().to_owned(),
            "password" => password = value.into_owned(),
            _ => {}
        }
    }
    let web = &state.web;
    let store = &*state.app.store;
    let attempt = match web.limiter.take(store, &username, address, crate::clock::now_ms()).await {
        Ok(Ok(attempt)) => attempt,
        Ok(Err(wait)) => {
            let minutes = wait.as_secs().div_ceil(60).max(1);
            let text = format!(
                "Too many failed sign-ins. Try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            );
            let mut response = sign_in_page(StatusCode::TOO_MANY_REQUESTS, Some(&text), &username);
            if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in: counting the attempt");
            return sign_in_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The server's database cannot be reached; try again in a minute."),
                &username,
            );
        }
    };
    // Counted as a failure already; anything but a wrong password or an unknown user forgives it.
    let result = web.directory.authenticate(&username, &Secret::new(password)).await;
    if !matches!(result, Err(DirectoryError::InvalidCredentials)) {
        if let Err(e) = web.limiter.forgive(store, attempt).await {
            tracing::warn!(error = %e, "sign-in: forgiving an attempt that was no failure");
        }
    }
    let user = match result {
        Ok(user) => user,
        Err(DirectoryError::InvalidCredentials) => {
            return sign_in_page(StatusCode::UNAUTHORIZED, Some("Wrong username or password."), &username);
        }
        Err(DirectoryError::Unavailable { reason }) => {
            tracing::warn!(%reason, "sign-in: the directory cannot be reached");
            return sign_in_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The directory cannot be reached right now, so nobody can sign in. Try again in a minute."),
                &username,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in: the directory refused the server's request");
            return sign_in_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The directory refused the server's request. Tell the operator: sign-in is misconfigured."),
                &username,
            );
        }
    };
    let Some((teams, roles)) = web.config.map_groups(&user.groups) else {
        tracing::info!(user = %user.username, "sign-in: in no mapped directory group");
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some("Your directory account is in no group this server knows, so you may not deploy or read anything here. Ask the operator to map one of your groups to your team."),
            &username,
        );
    };
    if let Err(e) = web.limiter.clear_user(store, &username).await {
        tracing::warn!(error = %e, "sign-in: forgetting the user's failed sign-ins");
    }
    let (Ok(id), Ok(csrf)) = (session::random_token(), session::random_token()) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            None,
            &message("No randomness for a session id."),
        );
    };
    let now = crate::clock::now_ms();
    let ttl = web.config.session_ttl;
    let record = WebSession {
        id_sha256: session::id_hash(&id),
        csrf,
        name: user.username.clone(),
        teams,
        roles,
        created_ms: now,
        expires_ms: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
    };
    if let Err(e) = state.app.store.create_session(&record).await {
        tracing::error!(error = %e, "sign-in: storing the session");
        return sign_in_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The server's database cannot be reached; try again in a minute."),
            &username,
        );
    }
    // A session the browser held before (another person's, or one planted) ends here.
    if let Some(old) = session::cookie_id(&parts.headers) {
        let _ = state.app.store.revoke_session(&session::id_hash(&old), now).await;
    }
    tracing::info!(user = %record.name, teams = ?record.teams, "signed in");
    let mut response = see_other("/");
    if let Some(cookie) = web.cookie.set(&id, ttl.as_secs()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn sign_out(State(state): State<WebState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !session::same_origin(&parts.headers) {
        return cross_site();
    }
    let session = match signed_in(&state, &parts.headers).await {
        Ok(Some((_, session))) => session,
        Ok(None) => return see_other("/sign-in"),
        Err(response) => return response,
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else { return cross_site() };
    if !form_csrf_ok(&bytes, &session) {
        return cross_site();
    }
    if let Err(e) = state.app.store.revoke_session(&session.id_sha256, crate::clock::now_ms()).await {
        tracing::error!(error = %e, "sign-out: revoking the session");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            Some(&session),
            &message(
                "The server's database cannot be reached; you are still signed in. Try again in a minute.",
            ),
        );
    }
    let mut response = see_other("/sign-in");
    if let Some(cookie) = state.web.cookie.clear() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Whether a posted form carries the session's CSRF token.
pub fn form_csrf_ok(body: &[u8], session: &WebSession) -> bool {
    form_urlencoded::parse(body)
        .any(|(name, value)| name == "csrf" && session::csrf_matches(&session.csrf, &value))
}

async fn style() -> Response {
    let mut response = STYLE.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

fn cross_site() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        None,
        &message("This form was sent from another site, or without this page's security token, and was refused. Reload the page and try again."),
    )
}

fn see_other(location: &'static str) -> Response {
    see_other_to(location)
}

/// 303 to a path of this site.
fn see_other_to(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn script() -> Response {
    let mut response = SCRIPT.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

/// `/web/vms.js`: the VM page's live log ([`vms`]).
async fn vms_script() -> Response {
    let mut response = vms::SCRIPT.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

/// The live parts: local times, the list's running rows, a deployment's hosts and event log.
const SCRIPT: &str = include_str!("page.js");

fn message(text: &str) -> String {
    format!("<p role=\"alert\">{}</p>", escape(text))
}

fn sign_in_page(status: StatusCode, error: Option<&str>, username: &str) -> Response {
    let alert = error.map(message).unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{alert}\
         <form method=\"post\" action=\"/sign-in\" class=\"sign-in\">\
         <label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" required value=\"{}\" autofocus>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>",
        escape(username)
    );
    page(status, "Sign in · Vesemir", None, &body)
}

/// A whole page: the layout around `body`, with a sign-out form when signed in, and the
/// headers every page carries (no caching, no framing, no sniffing, a strict CSP).
fn page(status: StatusCode, title: &str, session: Option<&WebSession>, body: &str) -> Response {
    let vms = NAV.try_with(|nav| nav.vms).unwrap_or(false);
    let nav = if session.is_some() {
        format!(
            "<nav aria-label=\"Main\"><a href=\"/deployments\">Deployments</a><a href=\"/start\">Start a deployment</a>{}</nav>",
            if vms { "<a href=\"/vms\">VMs</a>" } else { "" }
        )
    } else {
        String::new()
    };
    let account = session.map_or_else(String::new, |s| {
        format!(
            "<form method=\"post\" action=\"/sign-out\" class=\"account\"><span>{}</span>\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            escape(&s.name),
            escape(&s.csrf)
        )
    });
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/web/style.css\"><script src=\"/web/page.js\" defer></script></head>\
         <body><header><a href=\"/\" class=\"brand\">Vesemir</a>{nav}{account}</header><main>{body}</main></body></html>",
        escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    response
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The stylesheet: readable on a phone, light and dark from the system's preference.
const STYLE: &str = r#":root { color-scheme: light dark; --bg: #fff; --fg: #1b1b1b; --muted: #5c5c5c; --line: #d0d0d0; --accent: #0b57d0; --bad: #b3261e; }
@media (prefers-color-scheme: dark) { :root { --bg: #121212; --fg: #e8e8e8; --muted: #a8a8a8; --line: #3a3a3a; --accent: #8ab4f8; --bad: #f2b8b5; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; justify-content: space-between; padding: .75rem 1rem; border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; color: var(--fg); text-decoration: none; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
a { color: var(--accent); }
.account { display: flex; gap: .5rem; align-items: center; }
.sign-in { display: grid; gap: .5rem; max-width: 22rem; }
input, button, select { font: inherit; padding: .5rem .75rem; border: 1px solid var(--line); border-radius: .375rem; background: var(--bg); color: var(--fg); }
button { cursor: pointer; background: var(--accent); color: var(--bg); border-color: var(--accent); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
[role=alert] { color: var(--bad); font-weight: 600; }
.button { display: inline-block; padding: .5rem .75rem; border-radius: .375rem; background: var(--accent); color: var(--bg); text-decoration: none; }
.danger { background: var(--bad); border-color: var(--bad); color: var(--bg); }
.orders { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .75rem 0; }
.filters { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin-bottom: 1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .375rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
.facts dd { margin: 0; }
.start { display: grid; gap: .5rem; max-width: 32rem; }
.events { font: 13px/1.4 ui-monospace, monospace; max-height: 28rem; overflow-y: auto; padding-left: 3rem; }
.events .kind { font-weight: 600; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
.problems { color: var(--bad); }
header nav { display: flex; flex-wrap: wrap; gap: .25rem 1rem; margin-right: auto; }
.help { color: var(--muted); }
.problem { color: var(--bad); font-weight: 600; margin: 0; }
[aria-invalid=true] { border-color: var(--bad); }
.copy { display: flex; gap: .5rem; align-items: center; }
.copyable { font: 14px/1.4 ui-monospace, monospace; max-width: 100%; }
.vm-log .time { color: var(--muted); }
.vm-log .bad, .refused { color: var(--bad); }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
