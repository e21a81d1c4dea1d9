//! A package repository drives deployments on the local lab, under steady load: a real APT
//! repository (tiny packages built with `dpkg-deb`, indexed by `dpkg-scanpackages`) served on
//! loopback by a small HTTP server that honours and counts conditional requests; `vesemir
//! serve` watches it for the unit's package and deploys each newer version (Debian order)
//! exactly once, over the real adapters (haproxy, sshd, goiardi), without one failed request.
//! A lower version appearing does nothing, an unreadable index is reported without stopping
//! anything, and a restarted server neither redeploys nor refetches the unchanged index.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Served;
use serde_json::Value;
use vesemir_core::ports::ServerStatus;
use vesemir_examples::lab::{Lab, LabOptions, LoadOptions, BACKEND, HAPROXY_TAG};
use vesemir_testkit::process::free_port;

const ADMIN: &str = "lab-admin-demo-token";
const PACKAGE: &str = "shop";
/// Where the index lives under the repository's root.
const INDEX: &str = "dists/stable/main/binary-amd64/Packages";

/// Runs a tool of the Debian package `package`, failing loudly when it is missing or fails.
fn run(dir: &Path, program: &str, args: &[&str], package: &str) -> Vec<u8> {
    let output = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("{program} could not be run ({e}): install the Debian package `{package}`")
    });
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// An APT repository in a directory: `pool/` holds the packages, the index is rebuilt (and
/// replaced atomically) by `dpkg-scanpackages` after each one added.
struct Repository {
    root: PathBuf,
}

impl Repository {
    fn new(root: PathBuf) -> Self {
        std::fs::create_dir_all(root.join("pool")).expect("pool");
        std::fs::create_dir_all(root.join(INDEX).parent().expect("a parent")).expect("dists");
        Self { root }
    }

    /// Builds `PACKAGE_VERSION_all.deb` of each version with `dpkg-deb --build`, then
    /// re-indexes the pool (once: the versions appear together).
    fn publish(&self, versions: &[&str]) {
        for version in versions {
            self.build(version);
        }
        self.index();
    }

    fn build(&self, version: &str) {
        let tree = self.root.join(format!("build-{version}"));
        std::fs::create_dir_all(tree.join("DEBIAN")).expect("DEBIAN");
        std::fs::write(
            tree.join("DEBIAN/control"),
            format!(
                "Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\nMaintainer: Lab <lab@example.com>\nDescription: the lab's shop\n"
            ),
        )
        .expect("control");
        let deb = format!("pool/{PACKAGE}_{version}_all.deb");
        run(
            &self.root,
            "dpkg-deb",
            &["--root-owner-group", "--build", &format!("build-{version}"), &deb],
            "dpkg",
        );
    }

    fn index(&self) {
        let index = run(&self.root, "dpkg-scanpackages", &["--multiversion", "pool"], "dpkg-dev");
        let temporary = self.root.join("Packages.new");
        std::fs::write(&temporary, index).expect("the index");
        std::fs::rename(&temporary, self.root.join(INDEX)).expect("the index in place");
    }

    fn hide_index(&self) {
        std::fs::remove_file(self.root.join(INDEX)).expect("index removed");
    }
}

/// What the repository's HTTP server answered.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// 200 with the index.
    full: u32,
    /// Requests carrying If-None-Match or If-Modified-Since.
    conditional: u32,
    /// 304 answers.
    not_modified: u32,
    /// 404 answers.
    missing: u32,
}

/// A small HTTP/1.1 file server on loopback with `ETag` (a hash of the file) and
/// `Last-Modified` (changing whenever the ETag does), honouring `If-None-Match` and
/// `If-Modified-Since` with 304.
struct RepositoryServer {
    port: u16,
    counts: Arc<Mutex<Counts>>,
}

impl RepositoryServer {
    fn start(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = listener.local_addr().expect("an address").port();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let seen = counts.clone();
        std::thread::spawn(move || {
            // ETag -> Last-Modified, a new date for each new content.
            let mut dates: HashMap<String, String> = HashMap::new();
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut headers = HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/');
                let file =
                    (!path.contains("..")).then(|| root.join(path)).and_then(|p| std::fs::read(p).ok());
                let mut counts = seen.lock().expect("counts");
                let conditional =
                    headers.contains_key("if-none-match") || headers.contains_key("if-modified-since");
                if conditional {
                    counts.conditional += 1;
                }
                let answer = match file {
                    None => {
                        counts.missing += 1;
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .as_bytes()
                            .to_vec()
                    }
                    Some(body) => {
                        let etag = format!("\"{}\"", &vesemir_http::auth::sha256_hex(&body)[..16]);
                        let next = dates.len();
                        let date = dates
                            .entry(etag.clone())
                            .or_insert_with(|| {
                                format!("Tue, 01 Dec 2026 00:{:02}:{:02} GMT", next / 60, next % 60)
                            })
                            .clone();
                        let unchanged = match headers.get("if-none-match") {
                            Some(tag) => tag.split(',').any(|t| t.trim() == etag),
                            None => headers.get("if-modified-since") == Some(&date),
                        };
                        if unchanged {
                            counts.not_modified += 1;
                            format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nLast-Modified: {date}\r\nConnection: close\r\n\r\n").into_bytes()
                        } else {
                            counts.full += 1;
                            let mut answer = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: {etag}\r\nLast-Modified: {date}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            answer.extend(body);
                            answer
                        }
                    }
                };
                drop(counts);
                let mut stream = stream;
                let _ = stream.write_all(&answer);
            }
        });
        Self { port, counts }
    }

    fn counts(&self) -> Counts {
        *self.counts.lock().expect("counts")
    }

    /// Waits (at most 20 s) until `until` holds of the counts.
    fn wait_for(&self, what: &str, until: impl Fn(Counts) -> bool) -> Counts {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counts = self.counts();
            if until(counts) {
                return counts;
            }
            assert!(Instant::now() < deadline, "the repository never saw {what}: {counts:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The lab's generated server configuration with its units replaced by `production` (every
/// host), watching the repository at `repository_port` every second.
fn server_config(lab: &Lab, port: u16, repository_port: u16) -> PathBuf {
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let head = text
        .split("[[units]]")
        .next()
        .expect("a head")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let hosts = lab
        .hosts()
        .iter()
        .map(|h| format!("{{ name = \"{}\", address = \"{}\" }}", h.name, h.address))
        .collect::<Vec<_>>()
        .join(", ");
    let unit = format!(
        "[[units]]\nteam = \"lab\"\napplication = \"shop\"\nenvironment = \"production\"\nplaybooks = [\"lab\"]\n\
         version = \"^[0-9][0-9A-Za-z.+~:-]{{0,63}}$\"\n\
         targets = {{ hosts = [{hosts}] }}\n\
         load_balancer = {{ backend = \"{BACKEND}\", discover = {{ tags = [\"{HAPROXY_TAG}\"], port = {api} }}, drain_timeout = \"10s\" }}\n\
         strategy = {{ max_concurrency = 1, concurrency = 1 }}\n\
         source = {{ apt = \"http://127.0.0.1:{repository_port}/\", suite = \"stable\", package = \"{PACKAGE}\", interval = \"1s\" }}\n",
        api = lab.api_port(),
    );
    let path = lab.dir().join("vesemir-server-source.toml");
    std::fs::write(&path, format!("{head}{unit}")).expect("server config");
    path
}

/// One HTTP/1.1 GET with the admin token: (status, body).
fn get(served: &Served, path: &str) -> (u16, String) {
    let address = served.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: lab\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("writes");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, body.to_owned())
}

/// The unit's deployments, newest first.
fn deployments(served: &Served) -> Vec<Value> {
    let (status, body) = get(served, "/v1/deployments?application=shop&environment=production");
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("JSON");
    list["deployments"].as_array().cloned().unwrap_or_default()
}

/// Waits (at most 120 s) until the unit has `count` deployments, the newest ended: it.
fn nth_ended(served: &Served, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = deployments(served);
        if all.len() >= count && !matches!(all[0]["status"].as_str(), Some("queued" | "running")) {
            assert_eq!(all.len(), count, "one deployment per new version: {all:?}");
            return all[0].clone();
        }
        assert!(Instant::now() < deadline, "deployment {count} never ended: {all:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn each_newer_package_version_is_deployed_once_without_a_failed_request() {
    let lab = Lab::start(LabOptions { hosts: 3, ..LabOptions::default() }).expect("the lab starts");
    let repository = Repository::new(lab.dir().join("apt"));
    repository.publish(&["1.0"]);
    let repo_server = RepositoryServer::start(repository.root.clone());
    let port = free_port();
    let config = server_config(&lab, port, repo_server.port);
    let mut served = Served::start(lab.config_path(), lab.dir(), &config, port);
    let traffic = lab.start_load(LoadOptions {
        rate: 100,
        max_duration: Duration::from_secs(180),
        ..LoadOptions::default()
    });
    std::thread::sleep(Duration::from_millis(500));

    // 1.0 is there at the start, and nothing was deployed yet: it is deployed.
    let first = nth_ended(&served, 1);
    assert_eq!(
        (first["version"].as_str(), first["status"].as_str()),
        (Some("1.0"), Some("succeeded")),
        "{first}"
    );
    assert_eq!(first["requested_by"], "apt:shop", "{first}");
    // Unchanged index: the polls are conditional and answered 304.
    repo_server.wait_for("a 304", |c| c.not_modified >= 2);

    // 1.1~rc1 and 1.1 appear together: only the highest (Debian order) is deployed.
    repository.publish(&["1.1~rc1", "1.1"]);
    let second = nth_ended(&served, 2);
    assert_eq!(
        (second["version"].as_str(), second["status"].as_str()),
        (Some("1.1"), Some("succeeded")),
        "{second}"
    );

    // A lower version appearing changes the index but deploys nothing.
    let before = repo_server.counts();
    repository.publish(&["0.9"]);
    repo_server.wait_for("the new index read", |c| c.full > before.full);
    let after = repo_server.counts();
    repo_server.wait_for("two more polls", |c| c.not_modified >= after.not_modified + 2);
    assert_eq!(deployments(&served).len(), 2);

    // An index that is gone (404) is reported and polled again; the server goes on.
    repository.hide_index();
    let before = repo_server.counts();
    repo_server.wait_for("two 404s", |c| c.missing >= before.missing + 2);
    let (status, metrics) = get(&served, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("vesemir_source_up{unit=\"lab/shop/production\"} 0"),
        "the source shows as down: {metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vesemir_source_polls_total{") && l.contains("outcome=\"error\"")),
        "{metrics}"
    );
    repository.index();

    // A restart: the last version seen and the index's validators were kept, so the first polls
    // are conditional (304) and nothing is deployed again.
    served.signal_term();
    assert!(served.wait_exit(Duration::from_secs(30)).is_some(), "vesemir serve stops on SIGTERM");
    drop(served);
    let before = repo_server.counts();
    let served = Served::start(lab.config_path(), lab.dir(), &config, port);
    let after = repo_server.wait_for("polls after the restart", |c| {
        c.conditional >= before.conditional + 3 && c.not_modified >= before.not_modified + 3
    });
    assert_eq!(after.full, before.full, "the restarted server refetched the unchanged index: {after:?}");
    assert_eq!(deployments(&served).len(), 2);
    let (_, metrics) = get(&served, "/metrics");
    assert!(metrics.contains("vesemir_source_up{unit=\"lab/shop/production\"} 1"), "{metrics}");

    std::thread::sleep(Duration::from_millis(500));
    let report = traffic.finish().expect("the load generator reports");
    for host in lab.hosts() {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some("1.1"), "{}", host.name);
        let states = lab.lb_status(&host.name).expect("HAProxy answers");
        assert!(states.iter().all(|s| s.status == ServerStatus::Up && s.weight == 100), "{states:?}");
    }
    assert_eq!(report.failed, 0, "{report}");
    assert!(report.by_version.get("1.1").is_some_and(|n| *n > 0), "{report}");
}
