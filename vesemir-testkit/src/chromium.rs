//! A real headless Chromium for browser tests: Debian's `chromedriver` (package
//! `chromium-driver`) started on a free loopback port in its own temp dir, driving
//! `/usr/bin/chromium` (package `chromium`) over WebDriver through fantoccini.
//!
//! [`Chromedriver`] owns the processes: when it drops, also while a test panics, it freezes
//! chromedriver and every process below it (the browser, its zygotes, renderers and helpers,
//! found as descendants of chromedriver's own pid in `/proc`), kills them by those pids and
//! reaps chromedriver through its child handle. Nothing is ever killed by name.
//!
//! [`Browser`] is one browser session for a test, with the few moves a test makes: go to a
//! path, fill a field, press a button or a link, read what the page shows, and wait (polling
//! the DOM, with a bound) until it shows something. A wait that times out saves a screenshot
//! in the artifacts folder and panics with the page's text.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::process::{free_port, require_binary, wait_for_tcp, ServerProcess};

/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(40);

/// A running chromedriver. Dropping it stops it and every browser it started.
#[derive(Debug)]
pub struct Chromedriver {
    server: ServerProcess,
    /// Chromedriver's pid, from its child handle: not reused while that handle has not reaped it.
    pid: u32,
    port: u16,
    chromium: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port, or panics naming the Debian package when
    /// it or Chromium is missing (or with its log when it does not listen).
    pub fn start() -> Self {
        let driver = require_binary("chromedriver", "chromium-driver");
        let chromium = require_binary("chromium", "chromium");
        let dir = ServerProcess::temp_dir("chromedriver");
        let port = free_port();
        let mut command = Command::new(driver);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", dir.path().join("chromedriver-verbose.log").display()))
            // The browser's own temp files (crash dumps, sockets) go with the driver's dir.
            .env("TMPDIR", dir.path());
        let mut server = ServerProcess::start("chromedriver", command, dir);
        wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(20), &mut server);
        let Some(pid) = server.pid() else { panic!("chromedriver exited at once\n{}", server.log()) };
        Self { server, pid, port, chromium }
    }

    /// The WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Capabilities for a headless Chromium with a profile in the driver's temp dir and a
    /// fixed window size; `--no-sandbox` only when the tests run as root (Chromium refuses
    /// its sandbox there).
    pub fn capabilities(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--window-size=1280,1024".to_owned(),
            format!("--user-data-dir={}", self.server.dir().join("profile").display()),
        ];
        if running_as_root() {
            args.push("--no-sandbox".to_owned());
        }
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        }
    }

    /// The pids of every process below chromedriver now (the browsers it started and their
    /// helpers).
    pub fn browser_pids(&self) -> Vec<u32> {
        descendants(self.pid).into_iter().collect()
    }

    /// Chromedriver's own pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What chromedriver wrote so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Stops every process below chromedriver, then chromedriver: each is frozen first
    /// (SIGSTOP, so none can start another or be reparented unseen), then killed.
    fn stop_all(&mut self) {
        let root = self.pid;
        if self.server.pid().is_none() {
            return;
        }
        signal("STOP", &[root]);
        let mut frozen = BTreeSet::new();
        // A process forked just before its parent froze shows up on the next look.
        for _ in 0..20 {
            let found: Vec<u32> = descendants(root).difference(&frozen).copied().collect();
            if found.is_empty() {
                break;
            }
            signal("STOP", &found);
            frozen.extend(found);
        }
        let all: Vec<u32> = frozen.into_iter().collect();
        signal("KILL", &all);
        self.server.stop();
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Whether this process runs as root.
fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|uid| uid == "0")
}

/// Every live process below `root`, from the parent pids in `/proc/*/stat`.
fn descendants(root: u32) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = BTreeSet::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if found.insert(*child) {
                queue.push(*child);
            }
        }
    }
    found
}

/// The parent pid of `pid`, unless it is gone or a zombie.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so read after the last `)`.
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    rest.next()?.parse().ok()
}

/// Whether `pid` is still a running process (not gone, not a zombie waiting to be reaped).
pub fn is_running(pid: u32) -> bool {
    parent_of(pid).is_some()
}

fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status();
}

/// One headless Chromium session on a site, for a test. Dropping it stops the browser and its
/// driver (see [`Chromedriver`]).
#[derive(Debug)]
pub struct Browser {
    client: Client,
    base: String,
    artifacts: PathBuf,
    driver: Chromedriver,
}

impl Browser {
    /// Starts chromedriver and a browser for the site at `base` (`http://127.0.0.1:PORT`);
    /// screenshots go to `artifacts`.
    pub async fn start(base: &str, artifacts: &Path) -> Self {
        let driver = tokio::task::spawn_blocking(Chromedriver::start).await.unwrap_or_else(|e| {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("starting chromedriver: {e}"),
            }
        });
        let client = ClientBuilder::native()
            .capabilities(driver.capabilities())
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("no browser session from chromedriver: {e}\n{}", driver.log()));
        Self { client, base: base.trim_end_matches('/').to_owned(), artifacts: artifacts.to_owned(), driver }
    }

    /// The driver (its pids, its log).
    pub fn driver(&self) -> &Chromedriver {
        &self.driver
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `path` of the site and waits until it has loaded.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client.goto(&url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The path of the page shown now.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap_or_else(|e| panic!("no current URL: {e}"));
        url.path().to_owned()
    }

    /// Types `text` into the field matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap_or_else(|e| panic!("cannot clear {css}: {e}"));
        field.send_keys(text).await.unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Presses the element matching `css` (a button, a link).
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("cannot press {css}: {e}"));
    }

    /// Follows the link whose text is `text`.
    pub async fn click_link(&self, text: &str) {
        let link = self.wait_for(Locator::LinkText(text), text).await;
        link.click().await.unwrap_or_else(|e| panic!("cannot follow the link {text:?}: {e}"));
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_for(Locator::Css(css), css).await
    }

    /// The element `locator` finds, waiting up to 10 s for it to appear.
    async fn wait_for(&self, locator: Locator<'_>, what: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(element) = self.client.find(locator).await {
                return element;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no element {what} appeared within 10 s")).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the first element matching `css` shows (its rendered text), or `None` when there
    /// is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![serde_json::json!(css)],
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// What every element matching `css` shows, in document order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let value = self
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0]), (e) => e.innerText);",
                vec![serde_json::json!(css)],
            )
            .await;
        serde_json::from_value(value).unwrap_or_default()
    }

    /// Waits up to `within` until the element matching `css` shows `expected` (a part of its
    /// text); what it shows then.
    pub async fn wait_text(&self, css: &str, expected: &str, within: Duration) -> String {
        self.wait_until(&format!("{css} shows {expected:?}"), within, || async {
            self.text(css).await.filter(|text| text.contains(expected))
        })
        .await
    }

    /// Polls `look` until it answers something, for at most `within`; on timeout saves a
    /// screenshot and panics with `what` and the page's text.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, within: Duration, mut look: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = look().await {
                return found;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("waited {within:?} for {what}")).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `script` in the page (WebDriver's synchronous execute, `arguments` as `args`).
    pub async fn execute(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Saves a screenshot of the page as `name` in the artifacts folder; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("no screenshot: {e}"));
        std::fs::create_dir_all(&self.artifacts)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.artifacts.display()));
        let path = self.artifacts.join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Ends the browser session (the processes stop when the browser drops).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Panics with `why`, the page's URL and text, after saving a screenshot `failure.png`.
    async fn fail(&self, why: &str) -> ! {
        let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let text = self.text("body").await.unwrap_or_default();
        let shot = match self.client.screenshot().await {
            Ok(png) => {
                let path = self.artifacts.join("failure.png");
                let saved =
                    std::fs::create_dir_all(&self.artifacts).and_then(|()| std::fs::write(&path, png));
                saved.map_or_else(|e| format!("(no screenshot: {e})"), |()| path.display().to_string())
            }
            Err(e) => format!("(no screenshot: {e})"),
        };
        panic!("{why}\nat {url}, screenshot {shot}, the page shows:\n{text}");
    }
}
