//! The web page end to end, in a real headless Chromium (Debian's `chromium` +
//! `chromium-driver`, over WebDriver), against `vesemir serve` on the local lab (real sshd,
//! HAProxy and goiardi) with sign-in through a real OpenLDAP slapd. One person's session, as
//! they see it: sign in; start a deployment from the catalog's form (plan, then deploy) and
//! watch the host rows reach "in rotation" without a reload; a deployment where a host fails
//! its health check shows which host, in which phase and why; after the host is healed,
//! "Retry failed hosts" (and its confirmation) deploys it; a running deployment is cancelled.
//! The deployment page at the end is saved as `target/browser-artifacts/deployment.png`.
//!
//! One lab, one server and one browser for the whole flow (seconds, not minutes).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Served;
use vesemir_examples::lab::{Lab, LabOptions};
use vesemir_testkit::chromium::Browser;
use vesemir_testkit::process::free_port;
use vesemir_testkit::slapd::{Slapd, SlapdUser};

const HOSTS: [&str; 3] = ["web-01", "web-02", "web-03"];

/// Bound on each wait for the page to show something.
const WAIT: Duration = Duration::from_secs(30);

/// Where screenshots go: `target/browser-artifacts/` of the workspace (CI keeps the folder).
fn artifacts() -> PathBuf {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser-artifacts")
}

/// `vesemir serve` with the lab's two-team configuration, a shorter health-check timeout (a
/// broken release fails in 3 s, not 8) and directory sign-in: members of the directory's
/// `shop-devs` deploy for team `lab`.
fn serve(lab: &Lab, slapd: &Slapd) -> Served {
    let port = free_port();
    let secret = lab.dir().join("ldap-service.secret");
    std::fs::write(&secret, Slapd::SERVICE_PASSWORD).expect("the service password file");
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let mut text = text
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("timeout = \"8s\"", "timeout = \"3s\"");
    text.push_str(&format!(
        "\n[ldap]\nurl = \"{url}\"\nbind_dn = \"{service}\"\nbind_password_file = \"{secret}\"\n\
         user_base = \"{people}\"\ngroup_base = \"{groups}\"\n\n\
         [[ldap.groups]]\ngroup = \"shop-devs\"\nteams = [\"lab\"]\nroles = [\"deploy\", \"read\"]\n",
        url = slapd.url(),
        service = Slapd::SERVICE_DN,
        secret = secret.display(),
        people = Slapd::PEOPLE,
        groups = Slapd::GROUPS,
    ));
    let server_config = lab.dir().join("vesemir-server-browser.toml");
    std::fs::write(&server_config, text).expect("server config");
    Served::start(lab.config_path(), lab.dir(), &server_config, port)
}

/// Records, in the page, every change of a host row's cells as `host field=text`
/// (`window.vesemirSeen`), rows the script adds (hosts planned after the page was made)
/// included; the variable lives as long as the page, so it also tells that the page was not
/// reloaded.
const RECORD_ROWS: &str = r#"
window.vesemirSeen = [];
const last = new Map();
const look = () => {
  for (const cell of document.querySelectorAll("table.hosts tr[data-host] td[data-field]")) {
    const key = `${cell.parentElement.dataset.host} ${cell.dataset.field}`;
    const text = cell.textContent;
    if (last.get(key) !== text) { last.set(key, text); window.vesemirSeen.push(`${key}=${text}`); }
  }
};
look();
new MutationObserver(look).observe(document.querySelector("table.hosts"), { subtree: true, childList: true, characterData: true });
"#;

/// The cell `field` of host `host`'s row.
fn cell(host: &str, field: &str) -> String {
    format!("tr[data-host=\"{host}\"] [data-field=\"{field}\"]")
}

/// Fills the start form of lab/shop/lab with `version` and `concurrency`, asks for the plan,
/// checks it, presses Deploy: the new deployment's id, from the page the browser lands on.
async fn deploy(browser: &Browser, version: &str, concurrency: &str) -> i64 {
    browser.goto("/start").await;
    browser.click_link("shop in lab").await;
    browser.fill("#version", version).await;
    browser.fill("#concurrency", concurrency).await;
    browser.click("button[value=plan]").await;
    let plan = browser.wait_text("section.preview", "This is the request as it will run", WAIT).await;
    assert!(plan.contains(&format!("\"version\": \"{version}\"")), "{plan}");
    browser.click("button[value=deploy]").await;
    deployment_page(browser, None).await
}

/// Waits until the browser shows a deployment's page (other than `not`): its id.
async fn deployment_page(browser: &Browser, not: Option<i64>) -> i64 {
    browser
        .wait_until("a deployment's page", WAIT, || async {
            let path = browser.path().await;
            let id = path.strip_prefix("/deployments/").and_then(|id| id.parse::<i64>().ok())?;
            let shown = browser.text("[data-deployment] h1").await?;
            (Some(id) != not && shown.starts_with(&format!("Deployment {id}:"))).then_some(id)
        })
        .await
}

/// Waits until the page says the deployment has ended: what its status says.
async fn ended(browser: &Browser) -> String {
    browser
        .wait_until("the deployment's end", WAIT, || async {
            let status = browser.text("[data-field=status]").await?;
            (!status.starts_with("queued") && !status.starts_with("running")).then_some(status)
        })
        .await
}

async fn seen(browser: &Browser) -> Vec<String> {
    serde_json::from_value(browser.execute("return window.vesemirSeen || null;", vec![]).await)
        .expect("the page was not reloaded: its record of the rows is still there")
}

async fn flow(lab: &Lab, served: &Served) {
    let browser = Browser::start(&served.url, &artifacts()).await;

    // Sign in through the form.
    browser.goto("/").await;
    browser.wait_text("h1", "Sign in", WAIT).await;
    browser.fill("#username", "alice").await;
    browser.fill("#password", "alice-pw").await;
    browser.click("form.sign-in button").await;
    let home = browser.wait_text("main", "Signed in as alice", WAIT).await;
    assert!(home.contains("Teams: lab."), "{home}");

    // A deployment from the catalog's form; its rows move without a reload.
    let first = deploy(&browser, "2.0.0", "2").await;
    browser.execute(RECORD_ROWS, vec![]).await;
    let status = ended(&browser).await;
    assert_eq!(status, "succeeded");
    assert_eq!(browser.texts("table.hosts tr[data-host] th").await, HOSTS, "one row per host");
    for host in HOSTS {
        browser.wait_text(&cell(host, "rotation"), "in rotation", WAIT).await;
        assert_eq!(browser.text(&cell(host, "outcome")).await.as_deref(), Some("succeeded"), "{host}");
    }
    let totals = browser.text("[data-field=totals]").await.unwrap_or_default();
    assert!(totals.starts_with("3 succeeded, 0 failed"), "{totals}");
    let record = seen(&browser).await;
    for host in HOSTS {
        // Each row changed while the person watched: no outcome when the page came, then
        // "succeeded".
        let outcomes: Vec<&String> =
            record.iter().filter(|s| s.starts_with(&format!("{host} outcome="))).collect();
        assert_eq!(outcomes.first().map(|s| s.as_str()), Some(&*format!("{host} outcome=")), "{record:?}");
        assert_eq!(
            outcomes.last().map(|s| s.as_str()),
            Some(&*format!("{host} outcome=succeeded")),
            "{record:?}"
        );
    }

    // A release that fails its health check on web-02: the page says which host, in which
    // phase and why.
    lab.break_release_on("web-02").expect("the lab does it");
    let failing = deploy(&browser, "3.0.0", "3").await;
    assert_ne!(failing, first);
    browser.execute(RECORD_ROWS, vec![]).await;
    let status = ended(&browser).await;
    // All three ran in one batch; the failure stopped the deployment (no failure tolerated).
    assert_eq!(status, "stopped");
    let totals = browser.text("[data-field=totals]").await.unwrap_or_default();
    assert!(totals.starts_with("2 succeeded, 1 failed"), "{totals}");
    assert_eq!(browser.text(&cell("web-02", "outcome")).await.as_deref(), Some("failed"));
    let phase = browser.text(&cell("web-02", "phase")).await.unwrap_or_default();
    let why = browser.text(&cell("web-02", "why")).await.unwrap_or_default();
    assert!(phase.contains("health"), "the phase it failed in: {phase:?}");
    assert!(why.contains("health"), "why: {why:?}");
    let failed = browser.text("[data-field=failed]").await.unwrap_or_default();
    assert!(failed.starts_with("web-02:"), "the summary names the failed host: {failed:?}");
    for host in ["web-01", "web-03"] {
        assert_eq!(browser.text(&cell(host, "outcome")).await.as_deref(), Some("succeeded"), "{host}");
    }
    assert!(seen(&browser).await.contains(&"web-02 outcome=failed".to_owned()));

    // The host is healed; "Retry failed hosts" appears on the page that is open, asks first,
    // then deploys web-02 again.
    lab.heal_release_on("web-02").expect("the lab does it");
    browser.click_link("Retry failed hosts…").await;
    browser.wait_text("main", "Start a new deployment of the hosts", WAIT).await;
    browser.click("main form button.danger").await;
    let retry = deployment_page(&browser, Some(failing)).await;
    browser.execute(RECORD_ROWS, vec![]).await;
    let status = ended(&browser).await;
    assert_eq!(status, "succeeded");
    browser.wait_text(&cell("web-02", "outcome"), "succeeded", WAIT).await;
    // Its server goes back once the retry has ended (to the state the failed deployment found
    // it in): the open page shows that too, and drops the orders that no longer apply.
    browser.wait_text(&cell("web-02", "rotation"), "in rotation", WAIT).await;
    browser
        .wait_until("the orders of a finished retry", WAIT, || async {
            let orders = browser.text(".orders").await.unwrap_or_default();
            (!orders.contains("Cancel") && !orders.contains("Restore")).then_some(())
        })
        .await;
    assert!(seen(&browser).await.contains(&"web-02 rotation=in rotation".to_owned()));
    assert!(retry > failing);

    // A running deployment, cancelled from its page.
    let running = deploy(&browser, "4.0.0", "1").await;
    browser.click_link("Cancel…").await;
    browser.wait_text("main", "Cancel this deployment?", WAIT).await;
    browser.click("main form button.danger").await;
    assert_eq!(deployment_page(&browser, None).await, running);
    let status = ended(&browser).await;
    assert_eq!(status, "cancelled");
    let outcomes = browser.texts("tr[data-host] [data-field=outcome]").await;
    assert!(outcomes.iter().any(|o| o == "cancelled"), "hosts not started: {outcomes:?}");
    let totals = browser.text("[data-field=totals]").await.unwrap_or_default();
    assert!(totals.contains("cancelled"), "{totals}");

    // The end as a person sees it: the finish time, and no order of a running deployment.
    browser
        .wait_until("the orders of a finished deployment", WAIT, || async {
            let orders = browser.text(".orders").await.unwrap_or_default();
            (!orders.contains("Cancel") && !orders.contains("Pause")).then_some(())
        })
        .await;
    let finished = browser.text("[data-field=finished]").await.unwrap_or_default();
    assert!(finished != "not yet" && !finished.is_empty(), "the finish time: {finished:?}");
    let shot = browser.screenshot("deployment.png").await;
    println!("the deployment page at the end: {}", shot.display());
    browser.close().await;
    assert!(lab.out_of_rotation().expect("HAProxy answers").is_empty(), "nothing left out of rotation");
}

#[test]
fn a_person_deploys_follows_a_failed_host_retries_it_and_cancels_one_in_chromium() {
    let lab = Lab::start(LabOptions { hosts: HOSTS.len(), ..LabOptions::default() }).expect("the lab starts");
    let slapd = Slapd::start(&[SlapdUser::new("alice", "alice-pw", &["shop-devs"])]);
    let served = serve(&lab, &slapd);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the browser");
    runtime.block_on(flow(&lab, &served));
}
