//! The `vesemir` binary against real servers: two haproxy instances and an OpenSSH sshd on
//! loopback, started by the test. Exit codes, error messages, JSON output, plan output, and real
//! deploys (one clean, one with a failing host).

use std::path::PathBuf;
use std::process::{Command, Output};

use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{Backend, LoadBalancer, ServerStatus};
use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};
use vesemir_testkit::haproxy::HaproxyInstance;
use vesemir_testkit::process::free_port;
use vesemir_testkit::sshd::Sshd;

const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];

/// Two haproxy instances fronting servers web-1..3, an sshd every host resolves to, and the
/// configuration and deployment files to reach them.
struct Lab {
    _sshd: Sshd,
    haproxy: Vec<HaproxyInstance>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Self {
        let sshd = Sshd::start();
        let servers: String =
            HOSTS.iter().map(|h| format!("    server {h} 127.0.0.1:{} weight 100\n", free_port())).collect();
        let backends = format!("backend be_web\n    balance roundrobin\n{servers}");
        let haproxy =
            vec![HaproxyInstance::start("be_web", &backends), HaproxyInstance::start("be_web", &backends)];
        let dir = tempfile::tempdir().expect("tempdir");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, sshd.known_hosts_line()).expect("known_hosts");
        std::fs::create_dir_all(dir.path().join("hosts")).expect("hosts dir");
        let config = format!(
            "[ssh]\nuser = \"{user}\"\nport = {port}\nkey = \"{key}\"\nknown_hosts = \"{known}\"\n\n\
             [playbooks.web]\nsteps = [{{ name = \"install\", run = \"test {{host}} != {{broken}} && printf %s {{version}} > {{dir}}/{{host}}.version\", timeout = \"20s\" }}]\n\
             [playbooks.web.health]\ncommand = \"test -f {{dir}}/{{host}}.version\"\ntimeout = \"5s\"\ninterval = \"200ms\"\n",
            user = sshd.user(),
            port = sshd.port(),
            key = sshd.ed25519_key().display(),
            known = known_hosts.display(),
        );
        std::fs::write(dir.path().join("vesemir.toml"), config).expect("config");
        let lab = Self { _sshd: sshd, haproxy, dir };
        lab.write_deploy("deploy.toml", "none", &lab.instances());
        lab
    }

    fn instances(&self) -> String {
        let parts: Vec<String> = self
            .haproxy
            .iter()
            .map(|h| match h.tcp_endpoint() {
                vesemir_core::ports::LbEndpoint::Tcp { address, port } => {
                    format!("{{ address = \"{address}\", port = {port} }}")
                }
                other => panic!("tcp endpoint expected, got {other}"),
            })
            .collect();
        parts.join(", ")
    }

    fn write_deploy(&self, name: &str, broken: &str, instances: &str) -> PathBuf {
        let hosts: Vec<String> =
            HOSTS.iter().map(|h| format!("{{ name = \"{h}\", address = \"127.0.0.1\" }}")).collect();
        let text = format!(
            "application = \"shop\"\nenvironment = \"test\"\nteam = \"web\"\nversion = \"1.0.0\"\nplaybook = \"web\"\n\n\
             [targets]\nhosts = [{}]\n\n[load_balancer]\nbackend = \"be_web\"\ninstances = [{instances}]\ndrain_timeout = \"5s\"\n\n\
             [strategy]\nconcurrency = 2\nmax_failures = 1\n\n[variables]\ndir = \"{}\"\nbroken = \"{broken}\"\n",
            hosts.join(", "),
            self.dir.path().join("hosts").display(),
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("deploy file");
        path
    }

    fn vesemir(&self, args: &[&str]) -> Output {
        vesemir_in(self.dir.path(), args)
    }

    fn version_on(&self, host: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("hosts").join(format!("{host}.version"))).ok()
    }

    async fn status(&self, server: &str) -> Vec<(ServerStatus, u32)> {
        let lb = HaproxyLoadBalancer::new(HaproxyConfig::default());
        let backend = Backend {
            name: BackendName::new("be_web").expect("name"),
            instances: self.haproxy.iter().map(HaproxyInstance::tcp_endpoint).collect(),
        };
        let states = lb.status(&backend, &ServerName::new(server).expect("name")).await.expect("status");
        states.into_iter().map(|s| (s.status, s.weight)).collect()
    }
}

/// Runs the binary in `dir` with no configuration from the environment.
fn vesemir_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(args)
        .current_dir(dir)
        .env_remove("VESEMIR_CONFIG")
        .output()
        .expect("runs vesemir")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_deploy_updates_every_host_and_prints_json() {
    let lab = Lab::start();
    let output = lab.vesemir(&["deploy", "-f", "deploy.toml", "--set", "version=2.0.0", "--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for host in HOSTS {
        assert_eq!(lab.version_on(host).as_deref(), Some("2.0.0"), "{host}");
        let states = lab.status(host).await;
        assert_eq!(states.len(), 2);
        assert!(states.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100), "{host}: {states:?}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines[..lines.len() - 1].iter().all(|l| l["event"]["seq"].is_u64()), "events first");
    assert_eq!(lines[0]["event"]["type"], "deployment_started");
    let report = &lines[lines.len() - 1]["report"];
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["totals"]["succeeded"], 3);
    assert!(report["max_out_of_rotation"].as_u64().is_some_and(|n| n <= 2), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_is_named_with_its_phase_and_left_out_of_rotation() {
    let lab = Lab::start();
    lab.write_deploy("broken.toml", "web-2", &lab.instances());
    let output = lab.vesemir(&["deploy", "-f", "broken.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("web-2 (127.0.0.1) FAILED during step 1 (install)"), "{all}");
    assert!(all.contains("why: the command ended with exit code 1"), "{all}");
    assert!(all.contains("Out of rotation now: web-2"), "{all}");
    assert!(all.contains("2 succeeded, 1 failed"), "{all}");
    assert_eq!(lab.version_on("web-1").as_deref(), Some("1.0.0"));
    assert_eq!(lab.version_on("web-2"), None);
    assert!(lab.status("web-2").await.iter().all(|(s, _)| *s == ServerStatus::Maint));
    assert!(lab.status("web-3").await.iter().all(|(s, w)| *s == ServerStatus::Up && *w == 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_hosts_servers_and_batches_and_changes_nothing() {
    let lab = Lab::start();
    let output = lab.vesemir(&["plan", "-f", "deploy.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("Plan: shop 1.0.0 to test (3 hosts, 2 batches, at most 2 out of rotation"), "{all}");
    assert!(all.contains("batch 2\n  web-3"), "{all}");
    assert_eq!(all.matches("ssh ok").count(), 3, "{all}");
    assert!(lab.version_on("web-1").is_none());
    assert!(lab.status("web-1").await.iter().all(|(s, _)| *s == ServerStatus::Up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_load_balancer_exits_3_before_changing_anything() {
    let lab = Lab::start();
    let instances = format!("{}, {{ address = \"127.0.0.1\", port = {} }}", lab.instances(), free_port());
    lab.write_deploy("down.toml", "none", &instances);
    let output = lab.vesemir(&["deploy", "-f", "down.toml"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(3), "{all}");
    assert!(all.contains("nothing was changed"), "{all}");
    assert!(all.contains("unreachable"), "{all}");
    assert!(lab.version_on("web-1").is_none());
}

#[test]
fn bad_configuration_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("vesemir.toml"),
        "[ssh]\nuser = \"x\"\nkey = \"nope\"\nhost_key_mode = \"yolo\"\n",
    )
    .expect("write");
    let output = vesemir_in(dir.path(), &["config", "check"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("vesemir.toml: 2 problems"), "{all}");
    assert!(all.contains("vesemir.toml: ssh.key: cannot read"), "{all}");
    assert!(all.contains("vesemir.toml: ssh.host_key_mode:"), "{all}");
}

#[test]
fn bad_deployment_file_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, "k").expect("write");
    std::fs::write(
        dir.path().join("vesemir.toml"),
        format!("[ssh]\nuser = \"x\"\nkey = \"{}\"\nhost_key_mode = \"accept-new\"\n", key.display()),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("d.toml"),
        "application = \"shop\"\nenvironment = \"test\"\nteam = \"web\"\nversion = \"1\"\n[targets]\nhosts = [{ name = \"a\", address = \"127.0.0.1\" }]\n[load_balancer]\nbackend = \"be;web\"\ninstances = [{ address = \"127.0.0.1\", port = 1 }]\n[changeset]\nsteps = [{ name = \"s\", run = \"true\" }]\n",
    )
    .expect("write");
    let output = vesemir_in(dir.path(), &["deploy", "-f", "d.toml", "--concurrency", "0"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("d.toml: 2 problems"), "{all}");
    assert!(all.contains("load_balancer.backend: \"be;web\" is not a valid HAProxy backend name"), "{all}");
    assert!(all.contains("strategy.concurrency: must be at least 1"), "{all}");
}

#[test]
fn help_documents_exit_codes_and_version_prints() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_vesemir")).args(args).output().expect("runs");
    let help = text(&run(&["deploy", "--help"]));
    assert!(help.contains("3  infrastructure unreachable before anything changed"), "{help}");
    let version = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("vesemir {}", env!("CARGO_PKG_VERSION"))
    );
    let completions = run(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_vesemir()"));
}
