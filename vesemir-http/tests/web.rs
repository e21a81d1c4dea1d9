//! The web page (issue 17) against a real OpenLDAP slapd. Sign-in and sessions: the same
//! message for a wrong password and an unknown user, a user in no mapped group, a directory
//! that is down, rate limits (shared by two instances on one PostgreSQL, and holding under
//! racing attempts), sign-in over LDAPS and StartTLS, CSRF and cross-site posts refused, no
//! session fixation, expired and revoked sessions refused, tokens still working for the API.
//! Pages: start from the catalog (plan with the hosts in start order, then deploy), the list
//! and a deployment's page, another team's pages 404, orders behind CSRF and a confirmation
//! (retry failed hosts, cancel), the event stream behind the session resumed by Last-Event-ID.
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
    send_with(web, method, path, cookie, form, origin, peer, &[]).await
}

#[allow(clippy::too_many_arguments)]
async fn send_with(
    web: &Web,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    origin: Option<&str>,
    peer: [u8; 4],
    extra: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(path).header(header::HOST, HOST);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
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
    answer(&web.server.router, request).await
}

/// `request`'s answer from `router`.
async fn answer(router: &axum::Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
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

/// A sign-in form posted to `router` from `peer`.
async fn sign_in_at(router: &axum::Router, user: &str, password: &str, peer: [u8; 4]) -> Answer {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/sign-in")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://deploy.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("username={user}&password={password}")))
        .expect("request");
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    answer(router, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_database_count_failed_sign_ins_together() {
    let cluster =
        tokio::task::spawn_blocking(vesemir_testkit::postgres::Postgres::start).await.expect("starts");
    let url = vesemir_http::PostgresUrl::parse(&cluster.database()).expect("a postgres url");
    let slapd = tokio::task::spawn_blocking(|| Slapd::start(&people())).await.expect("starts");
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), Slapd::SERVICE_PASSWORD).expect("writes");
    let limits = "max_failures_per_user = 4\nmax_failures_per_address = 6\nfailure_window = \"10m\"";
    let mut instances = Vec::new();
    for name in ["instance-a", "instance-b"] {
        let (url, ldap) = (url.clone(), ldap_section(&slapd, secret.path(), limits));
        instances.push(
            TestServer::start_with(Fleet::new(1), move |config| {
                config.database = vesemir_http::Database::Postgres(url);
                config.cluster.instance = Some(name.into());
                config.ldap = Some(ldap);
            })
            .await,
        );
    }
    let (a, b) = (&instances[0].router, &instances[1].router);
    // Four wrong passwords for alice, two on each instance: the limit, reached together.
    for router in [a, b, a, b] {
        assert_eq!(sign_in_at(router, "alice", "nope", PEER).await.status, StatusCode::UNAUTHORIZED);
    }
    for router in [a, b] {
        let limited = sign_in_at(router, "alice", "alice-pw", [10, 0, 0, 9]).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text);
    }
    // Per address: two more failures from PEER (one on each: six in all), then bob is refused
    // there on both instances, and not from elsewhere.
    assert_eq!(sign_in_at(a, "x1", "nope", PEER).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_at(b, "x2", "nope", PEER).await.status, StatusCode::UNAUTHORIZED);
    for router in [a, b] {
        assert_eq!(sign_in_at(router, "bob", "bob-pw", PEER).await.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let elsewhere = sign_in_at(b, "bob", "bob-pw", [10, 0, 0, 2]).await;
    assert_eq!(elsewhere.status, StatusCode::SEE_OTHER, "{}", elsewhere.text);
    // A success forgets the user's failures on every instance: three wrong passwords for bob
    // on A, his right one on B, then three more wrong ones still leave him room (four).
    for round in 0..2 {
        for _ in 0..3 {
            let wrong = sign_in_at(a, "bob", "nope", [10, 0, 0, 3]).await;
            assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "round {round}: {}", wrong.text);
        }
        let right = sign_in_at(b, "bob", "bob-pw", [10, 0, 0, 4]).await;
        assert_eq!(right.status, StatusCode::SEE_OTHER, "round {round}: {}", right.text);
    }
    // Racing wrong passwords on both instances (from many addresses): four are tried, the
    // rest refused before the directory is asked.
    let race = (0u8..10).map(|i| sign_in_at(if i % 2 == 0 { a } else { b }, "dave", "nope", [10, 1, 0, i]));
    let mut statuses: Vec<StatusCode> =
        futures_util::future::join_all(race).await.into_iter().map(|answer| answer.status).collect();
    statuses.sort();
    let expected: Vec<StatusCode> =
        [StatusCode::UNAUTHORIZED; 4].into_iter().chain([StatusCode::TOO_MANY_REQUESTS; 6]).collect();
    assert_eq!(statuses, expected);
    drop(instances);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_over_ldaps_and_starttls_with_the_sections_ca_file() {
    let slapd = tokio::task::spawn_blocking(|| Slapd::start_tls(&people())).await.expect("starts");
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), Slapd::SERVICE_PASSWORD).expect("writes");
    for (url, starttls) in [(slapd.ldaps_url(), false), (slapd.url(), true)] {
        let mut ldap = ldap_section(&slapd, secret.path(), "");
        (ldap.url, ldap.starttls, ldap.ca_file) = (url.clone(), starttls, Some(slapd.ca_file()));
        let server = TestServer::start_with(Fleet::new(1), move |config| config.ldap = Some(ldap)).await;
        let signed = sign_in_at(&server.router, "alice", "alice-pw", PEER).await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{url} starttls={starttls}: {}", signed.text);
        assert!(signed.session().is_some());
    }
    // Every bind slapd saw came over TLS.
    let log = slapd.server.log();
    assert!(log.lines().filter(|l| l.contains("mech=SIMPLE")).all(|l| !l.ends_with(" ssf=0")), "{log}");
    assert!(log.contains("TLS established"), "{log}");
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

/// A signed-in person's cookie and CSRF token.
struct Person {
    id: String,
    csrf: String,
}

async fn person(web: &Web, user: &str, password: &str) -> Person {
    let id = sign_in(web, user, password).await.session().unwrap_or_else(|| panic!("{user} signs in"));
    let csrf = home(web, &id).await.csrf();
    Person { id, csrf }
}

async fn get(web: &Web, who: &Person, path: &str) -> Answer {
    send(web, Method::GET, path, Some(&who.id), None, None, PEER).await
}

async fn post(web: &Web, who: &Person, path: &str, form: &str) -> Answer {
    let form = format!("csrf={}&{form}", who.csrf);
    send(web, Method::POST, path, Some(&who.id), Some(&form), HERE, PEER).await
}

fn deployment_of(answer: &Answer) -> i64 {
    answer
        .location
        .as_deref()
        .and_then(|l| l.strip_prefix("/deployments/"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no deployment in {:?} {} {}", answer.location, answer.status, answer.text))
}

const SHOP: &str = "team=payments&application=shop&environment=production";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_the_catalog_follow_the_page_and_retry_the_failed_host() {
    let web = start("").await;
    let alice = person(&web, "alice", "alice-pw").await;
    let bob = person(&web, "bob", "bob-pw").await;

    // The units alice's team may deploy, then one unit's form.
    let units = get(&web, &alice, "/start").await;
    assert!(units.text.contains("shop in production") && !units.text.contains("finder"), "{}", units.text);
    let form = get(&web, &alice, &format!("/start?{SHOP}")).await;
    assert!(
        form.text.contains("name=\"version\"") && form.text.contains("name=\"var.channel\""),
        "{}",
        form.text
    );

    // The plan: the request as it will run, nothing started.
    let fields = format!("{SHOP}&version=2.0.0&var.channel=stable&concurrency=1&key=form-1");
    let plan = post(&web, &alice, "/start", &format!("{fields}&action=plan")).await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.text);
    assert!(plan.text.contains("<h2>Plan</h2>") && plan.text.contains("2.0.0"), "{}", plan.text);
    // The hosts it would touch, found through the inventory, in the order they would start.
    let at: Vec<usize> = ["web-01", "web-02", "web-03"]
        .iter()
        .map(|host| {
            plan.text
                .find(&format!("data-planned-host=\"{host}\""))
                .unwrap_or_else(|| panic!("{host} missing from the plan: {}", plan.text))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "hosts out of order: {}", plan.text);
    assert!(plan.text.contains("3 hosts, at most 1 out of rotation at once"), "{}", plan.text);
    assert_eq!(web.server.get(ADMIN, "/v1/deployments").await.json["deployments"], serde_json::json!([]));
    let invalid = post(&web, &alice, "/start", &format!("{SHOP}&version=bad%20version&action=plan")).await;
    assert!(
        invalid.text.contains("class=\"problems\"") && invalid.text.contains("version"),
        "{}",
        invalid.text
    );

    // Deploy, with web-02 failing its install once.
    web.server.fleet.executor.fail_command_times(
        &vesemir_core::fake::FakeFleet::host(2),
        "install-app",
        1,
        1,
    );
    let started = post(&web, &alice, "/start", &format!("{fields}&action=deploy")).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
    let first = deployment_of(&started);
    // The same form sent twice starts one deployment.
    let again = post(&web, &alice, "/start", &format!("{fields}&action=deploy")).await;
    assert_eq!(deployment_of(&again), first);
    let ended = web.server.wait_finished(first).await;
    assert_eq!(ended["requested_by"], "alice", "the session's name is the requester");

    let page = get(&web, &alice, &format!("/deployments/{first}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    for expected in [
        "data-host=\"web-01\"",
        "data-host=\"web-03\"",
        "in rotation",
        "<h2>Events</h2>",
        "deployment finished",
        "Retry failed hosts",
    ] {
        assert!(page.text.contains(expected), "{expected} missing from {}", page.text);
    }
    assert!(
        page.text.contains("<ul class=\"failed\" data-field=\"failed\"><li><strong>web-02</strong>"),
        "{}",
        page.text
    );

    // Another team's person: the page and the order are not found.
    assert_eq!(get(&web, &bob, &format!("/deployments/{first}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&web, &bob, &format!("/deployments/{first}/view.json")).await.status,
        StatusCode::NOT_FOUND
    );
    let refused = post(&web, &bob, &format!("/deployments/{first}/retry"), "confirmed=yes").await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert!(!get(&web, &bob, "/deployments").await.text.contains(&format!("/deployments/{first}\"")));

    // Retry: first the confirmation, then the order, which starts a new deployment.
    let unconfirmed = post(&web, &alice, &format!("/deployments/{first}/retry"), "").await;
    assert_eq!(unconfirmed.location, Some(format!("/deployments/{first}/retry")));
    let question = get(&web, &alice, &format!("/deployments/{first}/retry")).await;
    assert!(question.text.contains("name=\"confirmed\" value=\"yes\""), "{}", question.text);
    let cross = send(
        &web,
        Method::POST,
        &format!("/deployments/{first}/retry"),
        Some(&alice.id),
        Some(&format!("csrf={}&confirmed=yes", alice.csrf)),
        EVIL,
        PEER,
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let retried = post(&web, &alice, &format!("/deployments/{first}/retry"), "confirmed=yes").await;
    let second = deployment_of(&retried);
    assert_ne!(second, first);
    assert_eq!(web.server.wait_finished(second).await["status"], "succeeded");

    // The list: newest first, filtered.
    let list = get(&web, &alice, "/deployments").await;
    let (at_second, at_first) = (
        list.text.find(&format!("href=\"/deployments/{second}\"")).expect("the retry is listed"),
        list.text.find(&format!("href=\"/deployments/{first}\"")).expect("the first is listed"),
    );
    assert!(at_second < at_first, "newest first");
    let succeeded = get(&web, &alice, "/deployments?status=succeeded").await;
    assert!(succeeded.text.contains(&format!("href=\"/deployments/{second}\"")));
    assert!(!succeeded.text.contains(&format!("href=\"/deployments/{first}\"")));

    // The event stream behind the session: all of it, then only what follows Last-Event-ID.
    let all = get(&web, &alice, &format!("/deployments/{first}/events")).await;
    assert!(all.text.contains("event: deployment_finished"), "{}", all.text);
    let ids: Vec<u64> =
        all.text.lines().filter_map(|l| l.strip_prefix("id: ")).filter_map(|i| i.parse().ok()).collect();
    let last = *ids.last().expect("events");
    let middle = ids[ids.len() / 2].to_string();
    let resumed = send_with(
        &web,
        Method::GET,
        &format!("/deployments/{first}/events"),
        Some(&alice.id),
        None,
        None,
        PEER,
        &[("last-event-id", &middle)],
    )
    .await;
    let resumed_ids: Vec<u64> =
        resumed.text.lines().filter_map(|l| l.strip_prefix("id: ")).filter_map(|i| i.parse().ok()).collect();
    assert_eq!(resumed_ids, ids[ids.len() / 2 + 1..].to_vec(), "no gap, no duplicate");
    let after = get(&web, &alice, &format!("/deployments/{first}/events?after={last}")).await;
    assert!(!after.text.contains("id: "), "{}", after.text);
    // Without a session, nothing.
    let anonymous =
        send(&web, Method::GET, &format!("/deployments/{first}/events"), None, None, None, PEER).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&web, Method::GET, "/deployments", None, None, None, PEER).await.location.as_deref(),
        Some("/sign-in")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_which_asks_first() {
    let web = start("").await;
    web.server.fleet.executor.set_latency(Duration::from_millis(300));
    let alice = person(&web, "alice", "alice-pw").await;
    let fields = "team=payments&application=shop&environment=staging&version=2.0.0&var.channel=stable&concurrency=1&key=k2";
    let id = deployment_of(&post(&web, &alice, "/start", &format!("{fields}&action=deploy")).await);
    let page = get(&web, &alice, &format!("/deployments/{id}")).await;
    assert!(page.text.contains(&format!("href=\"/deployments/{id}/cancel\"")), "{}", page.text);
    assert!(
        page.text.contains(&format!("data-deployment=\"{id}\""))
            && page.text.contains("data-finished=\"false\"")
    );
    // Pause and resume post at once (no question), with the token.
    web.server.wait_for(id, "running", |d| d["status"] == "running").await;
    let paused = post(&web, &alice, &format!("/deployments/{id}/pause"), "").await;
    assert_eq!(paused.location, Some(format!("/deployments/{id}")), "{}", paused.text);
    web.server.wait_for(id, "paused", |d| d["paused"] == true).await;
    assert!(get(&web, &alice, &format!("/deployments/{id}")).await.text.contains("running (paused)"));
    let resumed = post(&web, &alice, &format!("/deployments/{id}/resume"), "").await;
    assert_eq!(resumed.location, Some(format!("/deployments/{id}")), "{}", resumed.text);
    web.server.wait_for(id, "resumed", |d| d["paused"] == false).await;
    // Cancel without the token: refused; unconfirmed: the question.
    let unconfirmed = post(&web, &alice, &format!("/deployments/{id}/cancel"), "").await;
    assert_eq!(unconfirmed.location, Some(format!("/deployments/{id}/cancel")));
    let forged = send(
        &web,
        Method::POST,
        &format!("/deployments/{id}/cancel"),
        Some(&alice.id),
        Some("confirmed=yes"),
        HERE,
        PEER,
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let cancelled = post(&web, &alice, &format!("/deployments/{id}/cancel"), "confirmed=yes").await;
    assert_eq!(cancelled.location, Some(format!("/deployments/{id}")), "{}", cancelled.text);
    assert_eq!(web.server.wait_finished(id).await["status"], "cancelled");
    // An ended deployment refuses a second cancel with the API's words.
    let late = post(&web, &alice, &format!("/deployments/{id}/cancel"), "confirmed=yes").await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert!(late.alert().contains("has already ended"), "{}", late.alert());
    let view = get(&web, &alice, &format!("/deployments/{id}/view.json")).await;
    assert!(view.text.contains("\"status\":\"cancelled\""), "{}", view.text);
}

/// Issue 18: a web page over a catalog whose shop/staging promotes to shop/production once a
/// person confirms it.
async fn start_promoting() -> Web {
    let slapd = tokio::task::spawn_blocking(|| Slapd::start(&people())).await.expect("starts");
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), format!("{}\n", Slapd::SERVICE_PASSWORD)).expect("writes");
    let ldap = ldap_section(&slapd, secret.path(), "");
    let server = TestServer::start_with(Fleet::new(3), move |config| {
        config.ldap = Some(ldap);
        for unit in &mut config.units {
            if unit.application == "shop" && unit.environment == "staging" {
                unit.promote_to = Some("production".into());
                unit.promote_confirm = true;
            }
        }
    })
    .await;
    Web { slapd, server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_promotion_is_confirmed_from_the_deployment_page_with_the_token() {
    let web = start_promoting().await;
    let alice = person(&web, "alice", "alice-pw").await;
    let fields = "team=payments&application=shop&environment=staging&version=2.0.0&var.channel=stable&concurrency=1&key=k3";
    let id = deployment_of(&post(&web, &alice, "/start", &format!("{fields}&action=deploy")).await);
    web.server
        .wait_for(id, "a waiting promotion", |d| d["promotion"]["status"] == "waiting_confirmation")
        .await;
    let page = get(&web, &alice, &format!("/deployments/{id}")).await;
    assert!(page.text.contains(&format!("action=\"/deployments/{id}/promotion-confirm\"")), "{}", page.text);
    assert!(page.text.contains("Promote to shop/production"), "{}", page.text);
    assert!(page.text.contains(&format!("href=\"/deployments/{id}/promotion-decline\"")), "{}", page.text);
    let forged = send(
        &web,
        Method::POST,
        &format!("/deployments/{id}/promotion-confirm"),
        Some(&alice.id),
        Some(""),
        HERE,
        PEER,
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let confirmed = post(&web, &alice, &format!("/deployments/{id}/promotion-confirm"), "").await;
    let promoted = deployment_of(&confirmed);
    assert_ne!(promoted, id, "the page goes to the promoted deployment");
    let done = web.server.wait_finished(promoted).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (done["environment"].clone(), done["requested_by"].clone()),
        (serde_json::json!("production"), serde_json::json!("alice"))
    );
    let page = get(&web, &alice, &format!("/deployments/{id}")).await;
    assert!(!page.text.contains("promotion-confirm"), "{}", page.text);
}
