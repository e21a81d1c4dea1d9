//! The VM pages (issue 19) against a real slapd (sign-in and the directory of owners) and the
//! provisioning's fakes: a signed-in person creates a VM from the two-field form, is sent to
//! its page, which shows the log while it is built and, once ready, its DNS name, how to log in
//! and its `known_hosts` line; a refused request shows the form again with the problem next to
//! the field it names and the values typed; forms without the session's token or from another
//! site are refused; the event stream behind the session; cancel; a failed step with its
//! reason; destroy behind a confirmation that names what goes; a reader gets no orders.
#![allow(clippy::unwrap_used)]

#[path = "support/provision_fakes.rs"]
mod provision_fakes;
mod support;
#[path = "support/vm_web.rs"]
mod vm_web;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use provision_fakes::{Fail, KEY};
use support::{parse_sse, ADMIN};
use tower::ServiceExt;
use vm_web::{VmWeb, PASSWORD};

const HERE: &str = "http://vms.test";

struct Answer {
    status: StatusCode,
    location: Option<String>,
    cookie: Option<String>,
    text: String,
}

impl Answer {
    fn csrf(&self) -> String {
        let at = self.text.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        self.text[at..at + 64].to_owned()
    }
}

/// A request as a browser on this site sends it: Host, and Origin on posts.
async fn send(web: &VmWeb, method: Method, path: &str, session: Option<&str>, form: Option<&str>) -> Answer {
    send_from(web, method, path, session, form, Some(HERE)).await
}

async fn send_from(
    web: &VmWeb,
    method: Method,
    path: &str,
    session: Option<&str>,
    form: Option<&str>,
    origin: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method.clone()).uri(path).header(header::HOST, "vms.test");
    if let Some(id) = session {
        request = request.header(header::COOKIE, format!("vesemir_session={id}"));
    }
    if method == Method::POST {
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let mut request = request.body(Body::from(form.unwrap_or_default().to_owned())).unwrap();
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 7], 40000))));
    let response = web.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(std::time::Duration::from_secs(20), response.into_body().collect())
        .await
        .expect("the body within 20 s")
        .unwrap()
        .to_bytes();
    Answer {
        status,
        location: headers.get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()),
        cookie: headers.get(header::SET_COOKIE).map(|v| v.to_str().unwrap().to_owned()),
        text: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Signs `user` in: the session id.
async fn sign_in(web: &VmWeb, user: &str) -> String {
    let answer =
        send(web, Method::POST, "/sign-in", None, Some(&format!("username={user}&password={PASSWORD}")))
            .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{user} signs in: {}", answer.text);
    let cookie = answer.cookie.expect("a session cookie");
    cookie.strip_prefix("vesemir_session=").unwrap().split(';').next().unwrap().to_owned()
}

/// The text of the element after `marker` up to the next `<`.
fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    let at = text.find(marker).map(|i| i + marker.len()).unwrap_or_else(|| panic!("no {marker:?} in {text}"));
    let rest = &text[at..];
    &rest[..rest.find('<').unwrap_or(rest.len())]
}

/// How many VMs the API knows (every team's, as the admin reads them).
async fn vm_count(web: &VmWeb) -> usize {
    let reply = support::call(&web.router, Method::GET, "/v1/vms", Some(ADMIN), None, &[]).await;
    reply.json["vms"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_creates_a_vm_from_the_form_follows_its_log_and_reads_how_to_log_in() {
    let web = VmWeb::start(1).await;
    let alice = sign_in(&web, "alice").await;

    // The navigation has the VM pages; the form asks for the username and a flavor only, and
    // offers only the flavors the team may create, with their size.
    let home = send(&web, Method::GET, "/", Some(&alice), None).await;
    assert!(home.text.contains("<a href=\"/vms\">VMs</a>"), "{}", home.text);
    let form = send(&web, Method::GET, "/vms", Some(&alice), None).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text);
    assert!(form.text.contains("<label for=\"owner\">Username</label>"), "{}", form.text);
    assert!(
        form.text.contains("<option value=\"small\">small: 1 core, 512 MiB memory, 10 GiB disk</option>"),
        "{}",
        form.text
    );
    assert!(!form.text.contains("large"), "a flavor the team may not create: {}", form.text);
    assert_eq!(form.text.matches("<label for=").count(), 2, "{}", form.text);
    assert!(form.text.contains("Your team has no VM yet."), "{}", form.text);
    let csrf = form.csrf();

    // Without the session's token, or from another site: refused, nothing recorded.
    let forged = send(&web, Method::POST, "/vms", Some(&alice), Some("owner=alice&flavor=small")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text);
    let wrong =
        send(&web, Method::POST, "/vms", Some(&alice), Some("owner=alice&flavor=small&csrf=0000")).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);
    let cross = send_from(
        &web,
        Method::POST,
        "/vms",
        Some(&alice),
        Some(&format!("owner=alice&flavor=small&csrf={csrf}")),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "{}", cross.text);
    assert_eq!(vm_count(&web).await, 0, "a refused form records nothing");

    // An owner not in the directory: the form again, the problem next to the username, the
    // values kept.
    let unknown =
        send(&web, Method::POST, "/vms", Some(&alice), Some(&format!("owner=zed&flavor=small&csrf={csrf}")))
            .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unknown.text);
    assert!(
        after(&unknown.text, "data-problem=\"owner\">")
            .contains("&quot;zed&quot; is not a user of the directory"),
        "{}",
        unknown.text
    );
    assert!(
        unknown
            .text
            .contains("value=\"zed\" aria-describedby=\"owner-help owner-problem\" aria-invalid=\"true\""),
        "{}",
        unknown.text
    );
    assert!(!unknown.text.contains("data-problem=\"flavor\""), "{}", unknown.text);
    // A flavor the team may not create: next to the flavor, the username kept.
    let large =
        send(&web, Method::POST, "/vms", Some(&alice), Some(&format!("owner=bob&flavor=large&csrf={csrf}")))
            .await;
    assert_eq!(large.status, StatusCode::FORBIDDEN, "{}", large.text);
    assert!(
        after(&large.text, "data-problem=\"flavor\">").contains("small"),
        "names what it may create: {}",
        large.text
    );
    assert!(large.text.contains("<option value=\"large\" selected>large</option>"), "{}", large.text);
    assert!(large.text.contains("id=\"owner\" name=\"owner\" required autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\" value=\"bob\""), "{}", large.text);
    assert_eq!(vm_count(&web).await, 0, "a refused request records nothing");

    // Created: SSH stays silent for now, so the page is made while the VM is being built.
    web.world.set_deaf(true);
    let created = send(
        &web,
        Method::POST,
        "/vms",
        Some(&alice),
        Some(&format!("owner=alice&flavor=small&csrf={csrf}")),
    )
    .await;
    assert_eq!(
        (created.status, created.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/vms/alice-1")),
        "{}",
        created.text
    );
    web.wait_status_event("alice-1", "step_started", "wait_ssh").await;
    let building = send(&web, Method::GET, "/vms/alice-1", Some(&alice), None).await;
    assert_eq!(building.status, StatusCode::OK, "{}", building.text);
    assert!(building.text.contains("data-vm=\"alice-1\""), "{}", building.text);
    assert!(building.text.contains("data-running=\"true\""), "{}", building.text);
    assert_eq!(after(&building.text, "<strong data-field=\"status\">"), "creating");
    for line in [
        "step started</span> reserve",
        "step done</span> reserve",
        "placed</span> on hv-1 at 10.0.0.10",
        "step done</span> domain",
        "step started</span> wait_ssh",
    ] {
        assert!(building.text.contains(line), "{line}: {}", building.text);
    }
    assert!(building.text.contains("<span class=\"time\">+0."), "each line has its time: {}", building.text);
    assert!(
        building.text.contains("action=\"/vms/alice-1/cancel\""),
        "Cancel while creating: {}",
        building.text
    );
    assert!(!building.text.contains("How to log in"), "{}", building.text);
    assert!(building.text.contains("<script src=\"/web/vms.js\" defer></script>"), "{}", building.text);
    let script = send(&web, Method::GET, "/web/vms.js", None, None).await;
    assert!(script.status.is_success() && script.text.contains("EventSource"), "{}", script.status);

    // SSH answers: the VM gets ready; its page shows its name, address, login and host key.
    web.world.set_deaf(false);
    let view = web.wait_status("alice-1", "ready").await;
    let ready = send(&web, Method::GET, "/vms/alice-1", Some(&alice), None).await;
    assert_eq!(after(&ready.text, "<strong data-field=\"status\">"), "ready");
    assert!(ready.text.contains("data-running=\"false\""), "{}", ready.text);
    assert_eq!(after(&ready.text, "<code data-field=\"fqdn\">"), "alice-1.lab.test");
    assert_eq!(after(&ready.text, "<code data-field=\"address\">"), view["address"].as_str().unwrap());
    assert!(
        ready.text.contains("id=\"login\" class=\"copyable\" readonly value=\"ssh alice@alice-1.lab.test\""),
        "{}",
        ready.text
    );
    assert!(ready.text.contains(&format!("value=\"alice-1.lab.test,10.0.0.10 {KEY}\"")), "{}", ready.text);
    for line in [
        "host key recorded</span> ",
        "output</span> [bootstrap] Chef Infra Client finished",
        "step done</span> verify",
        "finished</span> ready",
    ] {
        assert!(ready.text.contains(line), "{line}: {}", ready.text);
    }
    assert!(ready.text.contains("href=\"/vms/alice-1/destroy\">Destroy…</a>"), "{}", ready.text);
    assert!(!ready.text.contains("/cancel"), "{}", ready.text);

    // The event stream behind the session, from where the page's log ends.
    let stream = send(&web, Method::GET, "/vms/alice-1/events?after=3", Some(&alice), None).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.text);
    let events = parse_sse(&stream.text);
    assert_eq!(events.first().map(|e| e.id), Some(4), "{}", stream.text);
    assert!(events.iter().all(|e| e.event == "provision"), "{}", stream.text);
    assert_eq!(events.last().unwrap().data["type"], "finished", "{}", stream.text);
    let anonymous = send(&web, Method::GET, "/vms/alice-1/events", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // The list shows it; a second VM for alice is past her limit: named next to the username.
    let list = send(&web, Method::GET, "/vms", Some(&alice), None).await;
    assert!(list.text.contains("<a href=\"/vms/alice-1\">alice-1</a></th><td>alice</td><td>small</td><td>ready</td><td><code>alice-1.lab.test</code></td>"), "{}", list.text);
    let second = send(
        &web,
        Method::POST,
        "/vms",
        Some(&alice),
        Some(&format!("owner=alice&flavor=small&csrf={csrf}")),
    )
    .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);
    assert!(
        after(&second.text, "data-problem=\"owner\">").contains("holds 1 VMs, the most allowed (1)"),
        "{}",
        second.text
    );
    assert!(second.text.contains("alice-1"), "the list is still shown: {}", second.text);

    // A reader sees the VM but gets no orders.
    let rita = sign_in(&web, "rita").await;
    let read = send(&web, Method::GET, "/vms/alice-1", Some(&rita), None).await;
    assert!(read.text.contains("ssh alice@alice-1.lab.test"), "{}", read.text);
    assert!(!read.text.contains("Destroy"), "{}", read.text);
    let flavors = send(&web, Method::GET, "/vms", Some(&rita), None).await;
    assert!(
        !flavors.text.contains("<form method=\"post\" action=\"/vms\""),
        "a reader creates nothing: {}",
        flavors.text
    );

    // Destroy: a confirmation naming what goes, then the destroy, followed on the same page.
    let unconfirmed =
        send(&web, Method::POST, "/vms/alice-1/destroy", Some(&alice), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(unconfirmed.location.as_deref(), Some("/vms/alice-1/destroy"));
    let confirm = send(&web, Method::GET, "/vms/alice-1/destroy", Some(&alice), None).await;
    for part in [
        "<code>alice-1</code> and its disk on <code>hv-1</code>",
        "A and PTR of <code>10.0.0.10</code>",
        "Chef",
        "name=\"confirmed\" value=\"yes\"",
    ] {
        assert!(confirm.text.contains(part), "{part}: {}", confirm.text);
    }
    let forged = send(&web, Method::POST, "/vms/alice-1/destroy", Some(&alice), Some("confirmed=yes")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(web.view("alice-1").await["status"], "ready");
    let destroyed = send(
        &web,
        Method::POST,
        "/vms/alice-1/destroy",
        Some(&alice),
        Some(&format!("csrf={csrf}&confirmed=yes")),
    )
    .await;
    assert_eq!(
        (destroyed.status, destroyed.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/vms/alice-1")),
        "{}",
        destroyed.text
    );
    web.wait_status("alice-1", "destroyed").await;
    assert!(web.world.is_empty(), "{}", web.world.describe());
    let gone = send(&web, Method::GET, "/vms/alice-1", Some(&alice), None).await;
    assert_eq!(after(&gone.text, "<strong data-field=\"status\">"), "destroyed");
    assert!(gone.text.contains("started</span> destroy alice-1.lab.test"), "{}", gone.text);
    assert!(gone.text.contains("finished</span> destroyed"), "{}", gone.text);
    assert!(!gone.text.contains("How to log in"), "{}", gone.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_and_a_cancel_show_what_happened_and_what_to_do() {
    let web = VmWeb::start(3).await;
    let bob = sign_in(&web, "bob").await;
    let csrf = send(&web, Method::GET, "/vms", Some(&bob), None).await.csrf();

    // Chef refuses: the page names the step and the reason, and the undos.
    web.world.fail(Some(Fail::Chef));
    let created =
        send(&web, Method::POST, "/vms", Some(&bob), Some(&format!("owner=bob&flavor=small&csrf={csrf}")))
            .await;
    assert_eq!(created.location.as_deref(), Some("/vms/bob-1"), "{}", created.text);
    web.wait_status("bob-1", "failed").await;
    let failed = send(&web, Method::GET, "/vms/bob-1", Some(&bob), None).await;
    assert_eq!(after(&failed.text, "<code data-field=\"failed-step\">"), "chef");
    assert!(
        after(&failed.text, "<span data-field=\"reason\">").contains("refused by the test"),
        "{}",
        failed.text
    );
    assert!(
        failed.text.contains("<li data-seq=")
            && failed.text.contains("data-kind=\"step_failed\" class=\"bad\""),
        "{}",
        failed.text
    );
    assert!(failed.text.contains("undo done</span> dns"), "{}", failed.text);
    assert!(failed.text.contains("<strong>What to do:</strong>"), "{}", failed.text);
    assert!(!failed.text.contains("How to log in") && !failed.text.contains("Destroy"), "{}", failed.text);
    web.world.fail(None);

    // Cancelled while waiting for SSH: back to the page, which shows the cancel and the end.
    web.world.set_deaf(true);
    let created =
        send(&web, Method::POST, "/vms", Some(&bob), Some(&format!("owner=bob&flavor=small&csrf={csrf}")))
            .await;
    let page = created.location.expect("the VM's page");
    let name = page.trim_start_matches("/vms/").to_owned();
    web.wait_status_event(&name, "step_started", "wait_ssh").await;
    let forged = send(&web, Method::POST, &format!("{page}/cancel"), Some(&bob), Some("")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let cancelled =
        send(&web, Method::POST, &format!("{page}/cancel"), Some(&bob), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(cancelled.location.as_deref(), Some(page.as_str()), "{}", cancelled.text);
    let ended = web.wait_ended(&name).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    let shown = send(&web, Method::GET, &page, Some(&bob), None).await;
    assert_eq!(after(&shown.text, "<strong data-field=\"status\">"), ended["status"].as_str().unwrap());
    assert!(shown.text.contains("cancel requested</span>"), "{}", shown.text);
    assert!(shown.text.contains("undo done</span> reserve"), "{}", shown.text);
    assert!(!shown.text.contains("/cancel\""), "no Cancel once ended: {}", shown.text);
    assert!(web.world.is_empty(), "{}", web.world.describe());

    // Another VM's page that does not exist: the same 404 as any.
    let missing = send(&web, Method::GET, "/vms/nobody-9", Some(&bob), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_vms_the_pages_are_missing_and_not_linked() {
    let web = VmWeb::start_with(None).await;
    let alice = sign_in(&web, "alice").await;
    let home = send(&web, Method::GET, "/", Some(&alice), None).await;
    assert!(home.text.contains("<nav aria-label=\"Main\">"), "{}", home.text);
    assert!(!home.text.contains("href=\"/vms\""), "{}", home.text);
    let list = send(&web, Method::GET, "/vms", Some(&alice), None).await;
    assert_eq!(list.status, StatusCode::NOT_FOUND, "{}", list.text);
    let csrf = home.csrf();
    let create = send(
        &web,
        Method::POST,
        "/vms",
        Some(&alice),
        Some(&format!("owner=alice&flavor=small&csrf={csrf}")),
    )
    .await;
    assert_eq!(create.status, StatusCode::NOT_FOUND, "{}", create.text);
    assert!(!create.text.contains("<form method=\"post\" action=\"/vms\""), "{}", create.text);
}
