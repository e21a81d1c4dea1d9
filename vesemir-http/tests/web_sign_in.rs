//! Directory sign-in and web sessions (issue 17) against a real OpenLDAP slapd: sign-in, the
//! same message for a wrong password and an unknown user, a user in no mapped group, a
//! directory that is down, rate limits, CSRF and cross-site posts refused, no session
//! fixation, expired and revoked sessions refused, tokens still working for the API.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use support::{Fleet, TestServer, ADMIN};
use tower::ServiceExt;
use vesemir_http::web::LdapConfig;
use vesemir_testkit::slapd::{Slapd, SlapdUser};

const HOST: &str = "deploy.test";

fn people() -> Vec<SlapdUser> {
    vec![
        SlapdUser::new("alice", "alice-pw", &["payments-devs", "everyone"]),
        SlapdUser::new("bob", "bob-pw", &["search-readers"]),
        SlapdUser::new("carol", "carol-pw", &["everyone"]),
    ]
}

/// The `[ldap]` section for `slapd`, as an operator writes it.
fn ldap_section(slapd: &Slapd, password_file: &std::path::Path, extra: &str) -> LdapConfig {
    let text = format!(
        r#"
url = "{url}"
bind_dn = "{service}"
bind_password_file = "{password}"
user_base = "{people}"
group_base = "{groups}"
timeout = "2s"
{extra}
[[groups]]
group = "payments-devs"
teams = ["payments"]
roles = ["deploy", "read"]
[[groups]]
group = "search-readers"
teams = ["search"]
roles = ["read"]
"#,
        url = slapd.url(),
        service = Slapd::SERVICE_DN,
        password = password_file.display(),
        people = Slapd::PEOPLE,
        groups = Slapd::GROUPS,
    );
    toml::from_str(&text).expect("a valid [ldap] section")
}

struct Web {
    slapd: Slapd,
    server: TestServer,
}

async fn start(extra: &str) -> Web {
    let slapd = tokio::task::spawn_blocking(|| Slapd::start(&people())).await.expect("starts");
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), format!("{}\n", Slapd::SERVICE_PASSWORD)).expect("writes");
    let ldap = ldap_section(&slapd, secret.path(), extra);
    let server = TestServer::start_with(Fleet::new(3), move |config| config.ldap = Some(ldap)).await;
    Web { slapd, server }
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Answer {
    /// The session id the answer sets, if any.
    fn session(&self) -> Option<String> {
        let cookie = self.set_cookie.as_deref()?;
        let value = cookie.strip_prefix("vesemir_session=")?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// The page's alert text.
    fn alert(&self) -> &str {
        let start = self.text.find("<p role=\"alert\">").map(|i| i + 16).unwrap_or(0);
        let end = self.text[start..].find("</p>").map_or(start, |i| start + i);
        &self.text[start..end]
    }

    fn csrf(&self) -> String {
        let at = self.text.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        self.text[at..at + 64].to_owned()
    }
}

/// One request from `peer`, as a browser on this site sends it (Origin, Host), with `cookie`.
async fn send(
    web: &Web,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    origin: Option<&str>,
    peer: [u8; 4],
) -> Answer {
    let mut request = Request::builder().method(method).uri(path).header(header::HOST, HOST);
    if let Some(id) = cookie {
        request = request.header(header::COOKIE, format!("theme=dark; vesemir_session={id}"));
    }
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    if form.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let mut request = request.body(Body::from(form.unwrap_or_default().to_owned())).expect("request");
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    let response = web.server.router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let text =
        String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).into_owned();
    Answer {
        status,
        location: headers.get(header::LOCATION).map(|v| v.to_str().expect("ascii").to_owned()),
        set_cookie: headers.get(header::SET_COOKIE).map(|v| v.to_str().expect("ascii").to_owned()),
        headers,
        text,
    }
}

const HERE: Option<&str> = Some("http://deploy.test");
const EVIL: Option<&str> = Some("https://evil.example");
const PEER: [u8; 4] = [10, 0, 0, 1];

async fn sign_in(web: &Web, user: &str, password: &str) -> Answer {
    let form = format!("username={user}&password={password}");
    send(web, Method::POST, "/sign-in", None, Some(&form), HERE, PEER).await
}

async fn home(web: &Web, id: &str) -> Answer {
    send(web, Method::GET, "/", Some(id), None, None, PEER).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_their_session_is_their_principal() {
    let web = start("").await;
    let form = send(&web, Method::GET, "/sign-in", None, None, None, PEER).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text.contains("name=\"password\" type=\"password\""), "{}", form.text);
    assert!(form.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));

    let signed = sign_in(&web, "alice", "alice-pw").await;
    assert_eq!(
        (signed.status, signed.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/")),
        "{}",
        signed.text
    );
    let cookie = signed.set_cookie.clone().expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "the test server listens on loopback: {cookie}");
    let id = signed.session().expect("an id");

    let page = home(&web, &id).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Signed in as <strong>alice</strong>"), "{}", page.text);
    assert!(page.text.contains("Teams: payments. Roles: deploy, read."), "{}", page.text);
    // Signed in, the form sends the person home.
    let again = send(&web, Method::GET, "/sign-in", Some(&id), None, None, PEER).await;
    assert_eq!(again.location.as_deref(), Some("/"));

    // Tokens keep working for the API; the cookie opens nothing there.
    let api = web.server.get(ADMIN, "/v1/deployments").await;
    assert_eq!(api.status, StatusCode::OK);
    let cookie_only = send(&web, Method::GET, "/v1/deployments", Some(&id), None, None, PEER).await;
    assert_eq!(cookie_only.status, StatusCode::UNAUTHORIZED);

    // A reader gets the read role only.
    let bob = sign_in(&web, "bob", "bob-pw").await.session().expect("bob signs in");
    assert!(home(&web, &bob).await.text.contains("Teams: search. Roles: read."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_read_the_same_and_no_group_is_said() {
    let web = start("").await;
    let wrong = sign_in(&web, "alice", "nope").await;
    let unknown = sign_in(&web, "mallory", "nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.alert(), "Wrong username or password.");
    assert_eq!(wrong.alert(), unknown.alert());
    assert!(wrong.set_cookie.is_none() && unknown.set_cookie.is_none());
    // The username typed is kept (escaped), the password never.
    assert!(wrong.text.contains("value=\"alice\"") && !wrong.text.contains("nope"));
    let injected = sign_in(&web, "%3Cscript%3E", "x").await;
    assert!(injected.text.contains("value=\"&lt;script&gt;\""), "{}", injected.text);

    let carol = sign_in(&web, "carol", "carol-pw").await;
    assert_eq!(carol.status, StatusCode::FORBIDDEN);
    assert!(carol.alert().contains("in no group this server knows"), "{}", carol.alert());
    assert!(carol.set_cookie.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_down_says_so() {
    let mut web = start("").await;
    web.slapd.stop();
    let answer = sign_in(&web, "alice", "alice-pw").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.alert().starts_with("The directory cannot be reached right now"), "{}", answer.alert());
    assert!(answer.set_cookie.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_limited_per_user_and_per_address() {
    let web =
        start("max_failures_per_user = 3\nmax_failures_per_address = 5\nfailure_window = \"10m\"").await;
    for _ in 0..3 {
        assert_eq!(sign_in(&web, "alice", "nope").await.status, StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused now, before the directory is asked.
    let limited = sign_in(&web, "Alice", "alice-pw").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text);
    assert!(
        limited.alert().starts_with("Too many failed sign-ins. Try again in 10 minutes"),
        "{}",
        limited.alert()
    );
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    assert!(limited.set_cookie.is_none());

    // Per address: two more failures (five from this address), then bob is refused here...
    for user in ["x1", "x2"] {
        assert_eq!(sign_in(&web, user, "nope").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sign_in(&web, "bob", "bob-pw").await.status, StatusCode::TOO_MANY_REQUESTS);
    // ...but not from another address.
    let elsewhere =
        send(&web, Method::POST, "/sign-in", None, Some("username=bob&password=bob-pw"), HERE, [10, 0, 0, 2])
            .await;
    assert_eq!(elsewhere.status, StatusCode::SEE_OTHER, "{}", elsewhere.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_and_posts_without_the_csrf_token_are_refused() {
    let web = start("").await;
    let cross =
        send(&web, Method::POST, "/sign-in", None, Some("username=alice&password=alice-pw"), EVIL, PEER)
            .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(cross.set_cookie.is_none());

    let id = sign_in(&web, "alice", "alice-pw").await.session().expect("signed in");
    let csrf = home(&web, &id).await.csrf();
    let forged = format!("csrf={csrf}");
    // From another site, even with the token: refused, still signed in.
    let answer = send(&web, Method::POST, "/sign-out", Some(&id), Some(&forged), EVIL, PEER).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // From this site without the token, or with another: refused.
    for form in ["", "csrf=0000", &format!("csrf={}", "0".repeat(64))] {
        let answer = send(&web, Method::POST, "/sign-out", Some(&id), Some(form), HERE, PEER).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{form}");
    }
    assert_eq!(home(&web, &id).await.status, StatusCode::OK, "still signed in");

    // The real form: signed out, the cookie cleared, and the id dead on the server.
    let out = send(&web, Method::POST, "/sign-out", Some(&id), Some(&forged), HERE, PEER).await;
    assert_eq!((out.status, out.location.as_deref()), (StatusCode::SEE_OTHER, Some("/sign-in")));
    assert!(out.set_cookie.as_deref().is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(home(&web, &id).await.location.as_deref(), Some("/sign-in"), "a revoked session is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_session_id_is_never_promoted() {
    let web = start("").await;
    // An id the attacker made up opens nothing...
    let planted = "a".repeat(64);
    assert_eq!(home(&web, &planted).await.location.as_deref(), Some("/sign-in"));
    // ...and signing in with it in the jar gives a new id.
    let form = "username=alice&password=alice-pw";
    let signed = send(&web, Method::POST, "/sign-in", Some(&planted), Some(form), HERE, PEER).await;
    let id = signed.session().expect("a new session");
    assert_ne!(id, planted);
    assert_eq!(home(&web, &planted).await.location.as_deref(), Some("/sign-in"));
    // A live session (the attacker's own, planted in the victim's browser) ends at the
    // victim's sign-in: the attacker's copy is dead.
    let attacker = sign_in(&web, "bob", "bob-pw").await.session().expect("bob signs in");
    let victim = send(&web, Method::POST, "/sign-in", Some(&attacker), Some(form), HERE, PEER).await;
    let victim = victim.session().expect("alice signs in");
    assert_ne!(victim, attacker);
    assert_eq!(home(&web, &attacker).await.location.as_deref(), Some("/sign-in"));
    assert_eq!(home(&web, &victim).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused() {
    let web = start("session_ttl = \"1s\"").await;
    let signed = sign_in(&web, "alice", "alice-pw").await;
    assert!(signed.set_cookie.as_deref().is_some_and(|c| c.contains("Max-Age=1")));
    let id = signed.session().expect("signed in");
    assert_eq!(home(&web, &id).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(home(&web, &id).await.location.as_deref(), Some("/sign-in"));
}

#[test]
fn the_ldap_section_is_checked_with_the_rest_of_the_config() {
    let text = format!(
        "database = \"x.db\"\n{}{}\n[ldap]\nurl = \"http://dir\"\nuser_base = \"ou=people\"\ngroup_base = \"ou=groups\"\nbind_dn = \"cn=svc\"\nsession_ttl = \"0s\"\n",
        support::units_toml(),
        support::PLAYBOOK
    );
    let errors = vesemir_http::ServerConfig::from_toml(&text).expect_err("invalid");
    let fields: Vec<String> = errors.errors().iter().map(|e| e.field.to_string()).collect();
    for field in ["ldap.url", "ldap.bind_password_file", "ldap.session_ttl", "ldap.groups"] {
        assert!(fields.iter().any(|f| f == field), "{field} missing from {fields:?}");
    }
}
