//! A small lab for the CLI's tests: two real haproxy instances and an OpenSSH sshd on loopback,
//! with the configuration and deployment files to reach them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{Backend, LoadBalancer, ServerStatus};
use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};
use vesemir_testkit::haproxy::HaproxyInstance;
use vesemir_testkit::process::free_port;
use vesemir_testkit::sshd::Sshd;

/// The `web` playbook: writes the version on the host (failing on the host named by the
/// `broken` variable); healthy once the version file exists.
pub const PLAYBOOK: &str = "[playbooks.web]\nsteps = [{ name = \"install\", run = \"test {host} != {broken} && printf %s {version} > {dir}/{host}.version\", timeout = \"20s\" }]\n\
[playbooks.web.health]\ncommand = \"test -f {dir}/{host}.version\"\ntimeout = \"5s\"\ninterval = \"200ms\"\n";

pub const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];

/// Two haproxy instances fronting servers web-1..3, an sshd every host resolves to, and the
/// configuration and deployment files to reach them.
pub struct Lab {
    _sshd: Sshd,
    pub haproxy: Vec<HaproxyInstance>,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn start() -> Self {
        // Each host has its own loopback address (a plan refuses two hosts at one address), and
        // one sshd listens on all of them.
        let sshd = Sshd::start_with("ListenAddress 127.0.0.2\nListenAddress 127.0.0.3");
        let servers: String = HOSTS
            .iter()
            .map(|h| format!("    server {h} {}:{} weight 100\n", address_of(h), free_port()))
            .collect();
        let backends = format!("backend be_web\n    balance roundrobin\n{servers}");
        let haproxy =
            vec![HaproxyInstance::start("be_web", &backends), HaproxyInstance::start("be_web", &backends)];
        let dir = tempfile::tempdir().expect("tempdir");
        let known_hosts = dir.path().join("known_hosts");
        let line = sshd.known_hosts_line();
        let lines: String =
            HOSTS.iter().map(|h| line.replace("[127.0.0.1]", &format!("[{}]", address_of(h)))).collect();
        std::fs::write(&known_hosts, lines).expect("known_hosts");
        std::fs::create_dir_all(dir.path().join("hosts")).expect("hosts dir");
        let config = format!(
            "[ssh]\nuser = \"{user}\"\nport = {port}\nkey = \"{key}\"\nknown_hosts = \"{known}\"\n\n{playbook}",
            playbook = PLAYBOOK,
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

    pub fn instances(&self) -> String {
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

    pub fn write_deploy(&self, name: &str, broken: &str, instances: &str) -> PathBuf {
        let hosts: Vec<String> =
            HOSTS.iter().map(|h| format!("{{ name = \"{h}\", address = \"{}\" }}", address_of(h))).collect();
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

    /// The server catalog's unit for the lab: team `web` deploys `shop` to `test` on the lab's
    /// hosts behind `be_web` on both haproxy instances, with the `web` playbook.
    pub fn unit(&self) -> String {
        let hosts: Vec<String> =
            HOSTS.iter().map(|h| format!("{{ name = \"{h}\", address = \"{}\" }}", address_of(h))).collect();
        format!(
            "[[units]]\nteam = \"web\"\napplication = \"shop\"\nenvironment = \"test\"\nplaybooks = [\"web\"]\n\
             targets = {{ hosts = [{}] }}\n\
             load_balancer = {{ backend = \"be_web\", instances = [{}], drain_timeout = \"5s\" }}\n\
             strategy = {{ max_concurrency = 2, concurrency = 2, canary = true }}\n\
             variables.dir = {{ pattern = \"^/[A-Za-z0-9._/-]+$\" }}\n\
             variables.broken = {{ pattern = \"^[a-z0-9-]+$\", default = \"none\" }}\n",
            hosts.join(", "),
            self.instances(),
        )
    }

    pub fn vesemir(&self, args: &[&str]) -> Output {
        vesemir_in(self.dir.path(), args)
    }

    pub fn version_on(&self, host: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("hosts").join(format!("{host}.version"))).ok()
    }

    /// Puts `server` in `state` on both haproxy instances (an operator at work).
    pub async fn set_state(&self, server: &str, state: vesemir_core::ports::AdminState) {
        let lb = HaproxyLoadBalancer::new(HaproxyConfig::default());
        let backend = Backend {
            name: BackendName::new("be_web").expect("name"),
            instances: self.haproxy.iter().map(HaproxyInstance::tcp_endpoint).collect(),
        };
        lb.set_state(&backend, &ServerName::new(server).expect("name"), state).await.expect("set state");
    }

    pub async fn status(&self, server: &str) -> Vec<(ServerStatus, u32)> {
        let lb = HaproxyLoadBalancer::new(HaproxyConfig::default());
        let backend = Backend {
            name: BackendName::new("be_web").expect("name"),
            instances: self.haproxy.iter().map(HaproxyInstance::tcp_endpoint).collect(),
        };
        let states = lb.status(&backend, &ServerName::new(server).expect("name")).await.expect("status");
        states.into_iter().map(|s| (s.status, s.weight)).collect()
    }
}

/// The loopback address of host `web-N`: `127.0.0.N`.
pub fn address_of(host: &str) -> String {
    format!("127.0.0.{}", host.trim_start_matches("web-"))
}

/// Runs the binary in `dir` with no configuration from the environment.
pub fn vesemir_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(args)
        .current_dir(dir)
        .env_remove("VESEMIR_CONFIG")
        .env("VESEMIR_STATE_DIR", dir.join("state"))
        .output()
        .expect("runs vesemir")
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `vesemir serve`, killed and reaped when dropped.
pub struct Served {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Served {
    /// Starts `vesemir --config CONFIG serve --server-config SERVER_CONFIG` in `dir` (output
    /// discarded) and waits until it listens on `port`.
    pub fn start(config: &Path, dir: &Path, server_config: &Path, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .arg("--server-config")
            .arg(server_config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts vesemir serve");
        Self::listening(child, port)
    }

    /// Waits until the server started as `child` listens on `port` of 127.0.0.1.
    pub fn listening(child: Child, port: u16) -> Self {
        let served = Served { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "vesemir serve did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }
}

impl Served {
    /// Sends it SIGTERM, as systemd's stop does.
    pub fn signal_term(&self) {
        let killed = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {}", self.child.id());
    }

    /// Waits up to `bound` for it to exit: its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the server at once (SIGKILL: no shutdown, no cleanup) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
