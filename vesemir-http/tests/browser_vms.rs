//! The VM page live in a real headless Chromium (Debian's `chromium` + `chromium-driver`, over
//! WebDriver): a person signs in (a real slapd), fills the two fields of the form, submits, and
//! watches the page's log grow without a reload while the VM is built (the provisioning's fakes,
//! with SSH held silent until the page is up), until the status reads `ready` and the login
//! line appears; the lines that arrived live read exactly like the server's after a reload.
#![allow(clippy::unwrap_used)]

#[path = "support/provision_fakes.rs"]
mod provision_fakes;
mod support;
#[path = "support/vm_web.rs"]
mod vm_web;

use std::time::Duration;

use support::Loopback;
use vesemir_testkit::chromium::Browser;
use vm_web::{VmWeb, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_creates_a_vm_whose_page_follows_its_log_live_until_the_login_line() {
    let web = VmWeb::start(2).await;
    let loopback = Loopback::serve(&web.server).await;
    let browser =
        Browser::start(&format!("http://{}", loopback.address), &support::browser_artifacts()).await;

    browser.goto("/sign-in").await;
    browser.fill("#username", "alice").await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form.sign-in button").await;
    browser.wait_text("main", "Signed in as alice", Duration::from_secs(10)).await;

    // The guest's SSH stays silent until the page is up: the VM waits there.
    web.world.set_deaf(true);
    browser.click_link("VMs").await;
    browser.wait_text("main h1", "VMs", Duration::from_secs(10)).await;
    browser.fill("#owner", "alice").await;
    let flavor = browser.execute("return document.querySelector('#flavor').value;", vec![]).await;
    assert_eq!(flavor, "small", "the only flavor the team may create is chosen");
    browser.screenshot("vm-form.png").await;
    browser.click("form.vm-form button[type=submit]").await;
    browser
        .wait_until("the VM's page", Duration::from_secs(10), || async {
            (browser.path().await == "/vms/alice-1").then_some(())
        })
        .await;
    // Lives as long as the page: still there at the end proves there was no reload.
    let running = browser
        .execute(
            "window.vesemirSamePage = true; return document.querySelector('[data-vm]').dataset.running;",
            vec![],
        )
        .await;
    assert_eq!(running, "true", "the page was made while the VM was being built");
    browser.wait_text("ol.vm-log", "step started wait_ssh", Duration::from_secs(10)).await;
    let before = browser.texts("ol.vm-log li").await;
    assert!(browser.text("main").await.unwrap_or_default().contains("Cancel the create"));

    // SSH answers: the rest of the log arrives live, then the status and the login line.
    web.world.set_deaf(false);
    browser
        .wait_until("the status ready and the login line", Duration::from_secs(15), || async {
            let status = browser.text("[data-field=status]").await.unwrap_or_default();
            let login = browser
                .execute("const e = document.querySelector('#login'); return e ? e.value : null;", vec![])
                .await;
            (status == "ready" && login == "ssh alice@alice-1.lab.test").then_some(())
        })
        .await;
    let same = browser.execute("return window.vesemirSamePage === true;", vec![]).await;
    assert_eq!(same, true, "the page was not reloaded");
    let live = browser
        .wait_until("the log's last line", Duration::from_secs(5), || async {
            let lines = browser.texts("ol.vm-log li").await;
            lines.last().is_some_and(|l| l.contains("finished ready")).then_some(lines)
        })
        .await;
    assert!(live.len() > before.len(), "the log grew: {before:?} then {live:?}");
    for line in ["host key recorded", "output [bootstrap] Chef Infra Client finished", "step done verify"] {
        assert!(live.iter().any(|l| l.contains(line)), "{line}: {live:?}");
    }
    let dns = browser.text("[data-field=fqdn]").await.unwrap_or_default();
    assert_eq!(dns, "alice-1.lab.test");
    assert_eq!(
        browser.text("button.copy-button").await.as_deref(),
        Some("Copy"),
        "the login line is copyable"
    );
    let orders = browser.text(".orders").await.unwrap_or_default();
    assert!(orders.contains("Destroy") && !orders.contains("Cancel"), "the orders of a ready VM: {orders}");
    browser.screenshot("vm-ready.png").await;

    // What arrived live reads like the server's own rendering.
    browser.goto("/vms/alice-1").await;
    let reloaded = browser.texts("ol.vm-log li").await;
    assert_eq!(live, reloaded, "the live log and the page's log after a reload");

    browser.close().await;
    loopback.stop().await;
}
