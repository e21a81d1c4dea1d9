//! A local lab on loopback, the way a newcomer first meets Vesemir: N fake VMs (each its own
//! `127.X.Y.N` address with its own `sshd` and a small app that serves its version and a health
//! endpoint, restarting in about a second like a real service), two HAProxy boxes fronting them
//! with the runtime API, a Chef server (goiardi) with the hosts and the HAProxy boxes registered,
//! and the `vesemir.toml` and deployment file to reach them. Everything it starts is stopped when
//! the [`Lab`] drops, also on panic.
//!
//! ```no_run
//! use vesemir_examples::lab::{Lab, LabOptions, LabResult, LoadOptions};
//! # fn main() -> LabResult<()> {
//! let lab = Lab::start(LabOptions { hosts: 6, ..LabOptions::default() })?;
//! let load = lab.start_load(LoadOptions::default());
//! // run `vesemir -c <lab.config_path()> deploy -f <lab.deploy_path()>` here
//! let report = load.finish()?;
//! assert_eq!(report.failed, 0);
//! # Ok(())
//! # }
//! ```
//!
//! The lab runs on its own tokio runtime (its apps and load generator), so it works the same
//! from a plain `#[test]`, an async test or a `main`. Its functions answer a [`LabError`] that
//! says what failed; the real servers it starts come from `vesemir-testkit`, whose starters
//! panic with the log of a server that does not come up (a missing binary is checked first and
//! answered as an error naming its Debian package).

mod app;
mod chef;
mod error;
mod load;
mod net;
mod restart;
mod servers;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{Backend, InstanceState, LbEndpoint, LoadBalancer, ServerStatus};
use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};

pub use app::{BROKEN_RELEASE_MARKER, RESTART_DOWNTIME};
pub use chef::{ENVIRONMENT, HAPROXY_TAG, SECOND_WEB_TAG, WEB_TAG};
pub use error::{LabError, LabResult};
pub use load::{LoadOptions, LoadReport, LoadRun};
pub use restart::{RestartTimes, VARIED_MAX, VARIED_MEDIAN, VARIED_MIN, VARIED_SIGMA};
pub use servers::{BACKEND, SECOND_BACKEND};

use error::Context;
use vesemir_testkit::goiardi::Goiardi;
use vesemir_testkit::process::{find_binary, ServerProcess};
use vesemir_testkit::sshd::generate_key;

/// The binaries the lab runs, with the Debian package of each.
const BINARIES: [(&str, &str); 4] = [
    ("sshd", "openssh-server"),
    ("ssh-keygen", "openssh-client"),
    ("haproxy", "haproxy"),
    ("goiardi", "goiardi"),
];

/// The marker that makes a host's deploy step fail (exit code 7).
pub const STEP_FAILS_MARKER: &str = "step-fails";

/// What lab to start.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// How many hosts (fake VMs), at most 240.
    pub hosts: usize,
    /// The version every app serves at the start.
    pub initial_version: String,
    /// The version the generated deployment file deploys.
    pub deploy_version: String,
    /// `strategy.concurrency` of the generated deployment file.
    pub concurrency: usize,
    /// How long each host's app is down when it restarts (fixed by default); can be changed on
    /// a running lab with [`Lab::set_restart_times`].
    pub restart_times: RestartTimes,
    /// How many of the last hosts form a second backend ([`SECOND_BACKEND`], tagged
    /// [`SECOND_WEB_TAG`], with a frontend of its own on each HAProxy box): a second
    /// environment, e.g. production beside staging. 0 (the default): one backend.
    pub second_backend: usize,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            hosts: 6,
            initial_version: "1.0.0".into(),
            deploy_version: "2.0.0".into(),
            concurrency: 2,
            restart_times: RestartTimes::default(),
            second_backend: 0,
        }
    }
}

/// One fake VM.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// Its name: the Chef node, the HAProxy server and the Vesemir host are all called this.
    pub name: String,
    /// Its own loopback address.
    pub address: Ipv4Addr,
    /// Where its app listens.
    pub app: SocketAddr,
    /// Its files (the app's version, markers).
    pub dir: PathBuf,
    /// The HAProxy backend its server is in ([`BACKEND`] or [`SECOND_BACKEND`]).
    pub backend: &'static str,
}

/// One HAProxy box.
#[derive(Debug)]
pub struct LabHaproxy {
    /// Its own loopback address.
    pub address: Ipv4Addr,
    /// Where its frontend listens.
    pub frontend: SocketAddr,
    /// Where the frontend of the second backend listens, when the lab has one.
    pub second_frontend: Option<SocketAddr>,
    /// Its runtime API (TCP, level admin).
    pub endpoint: LbEndpoint,
    process: ServerProcess,
}

/// A running lab. Dropping it stops every process and removes every file.
#[derive(Debug)]
pub struct Lab {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: watch::Sender<bool>,
    hosts: Vec<LabHost>,
    sshd: Vec<Option<ServerProcess>>,
    haproxy: Vec<LabHaproxy>,
    goiardi: Goiardi,
    ssh_port: u16,
    api_port: u16,
    user: String,
    config_path: PathBuf,
    deploy_path: PathBuf,
    dir: tempfile::TempDir,
    _subnet: net::Subnet,
}

const STEP_SCRIPT: &str = r#"#!/bin/bash
# The lab's deploy step: install the new version and restart the app like a real service.
set -u
dir=$1 version=$2
if [ -e "$dir/step-fails" ]; then
  echo "lab: the install of $version fails on this host (marker $dir/step-fails)" >&2
  exit 7
fi
printf '%s' "$version" > "$dir/version.next"
: > "$dir/restart"
for _ in $(seq 1 400); do
  if [ ! -e "$dir/restart" ]; then echo "restarted with $version"; exit 0; fi
  sleep 0.025
done
echo "lab: the app did not come back within 10 s" >&2
exit 3
"#;

const HEALTH_SCRIPT: &str = r#"#!/bin/bash
# The lab's health check: the app must answer 200 on GET /health.
dir=$1
address=$(cat "$dir/app-address")
if ! exec 3<>"/dev/tcp/${address%:*}/${address##*:}"; then
  echo "app at $address: connection refused" >&2
  exit 1
fi
printf 'GET /health HTTP/1.0\r\nHost: lab\r\n\r\n' >&3
if ! IFS= read -r -t 3 status <&3; then
  echo "app at $address: no answer within 3 s" >&2
  exit 1
fi
case "$status" in *" 200 "*) exit 0 ;; esac
echo "app at $address answered: ${status%$'\r'}" >&2
exit 1
"#;

impl Lab {
    /// Starts a lab, or says what failed (and which Debian package is missing).
    pub fn start(options: LabOptions) -> LabResult<Self> {
        if !(1..=240).contains(&options.hosts) {
            return Err(LabError::new(format!("a lab has 1 to 240 hosts, not {}", options.hosts)));
        }
        if options.second_backend >= options.hosts {
            return Err(LabError::new(format!(
                "a second backend of {} hosts leaves none of the lab's {} to the first",
                options.second_backend, options.hosts
            )));
        }
        for (binary, package) in BINARIES {
            if find_binary(binary).is_none() {
                return Err(LabError::new(format!(
                    "`{binary}` is not installed: the lab runs real servers; install it with \
                     `apt-get install -y {package}`"
                )));
            }
        }
        let subnet = net::Subnet::claim()?;
        let dir = tempfile::Builder::new()
            .prefix("vesemir-lab-")
            .tempdir()
            .context(|| "cannot make the lab's temp dir".into())?;
        let root = dir.path().to_path_buf();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vesemir-lab")
            .enable_all()
            .build()
            .context(|| "cannot start the lab's runtime".into())?;
        let (shutdown, shutdown_rx) = watch::channel(false);

        // Keys: one host key for every sshd, one client key.
        let keys = root.join("keys");
        create_dir(&keys)?;
        generate_key(&keys.join("ssh_host_ed25519_key"), "ed25519", "");
        generate_key(&keys.join("id_ed25519"), "ed25519", "");
        write(&keys.join("authorized_keys"), &read(&keys.join("id_ed25519.pub"))?)?;
        write(&root.join("step.sh"), STEP_SCRIPT)?;
        write(&root.join("health.sh"), HEALTH_SCRIPT)?;

        // Addresses and ports.
        let host_addresses: Vec<Ipv4Addr> =
            (0..options.hosts).map(|i| subnet.address(10 + i as u8)).collect();
        let lb_addresses = [subnet.address(2), subnet.address(3)];
        let ssh_port = subnet.free_port_on(&host_addresses)?;
        let app_port = subnet.free_port_on(&host_addresses)?;
        let api_port = subnet.free_port_on(&lb_addresses)?;
        let frontend_port = subnet.free_port_on(&lb_addresses)?;
        let mut frontends = vec![(BACKEND, frontend_port)];
        if options.second_backend > 0 {
            frontends.push((SECOND_BACKEND, subnet.free_port_on(&lb_addresses)?));
        }
        let first_backend_hosts = options.hosts - options.second_backend;

        // The hosts: files, app, sshd.
        let width = options.hosts.to_string().len().max(2);
        let mut hosts = Vec::with_capacity(options.hosts);
        for (i, address) in host_addresses.iter().enumerate() {
            let name = format!("web-{:0width$}", i + 1);
            let host_dir = root.join("hosts").join(&name);
            create_dir(&host_dir)?;
            let app = SocketAddr::from((*address, app_port));
            write(&host_dir.join(app::VERSION_FILE), &options.initial_version)?;
            write(&host_dir.join("app-address"), &app.to_string())?;
            runtime.spawn(app::supervise(app, host_dir.clone(), shutdown_rx.clone()));
            let backend = if i < first_backend_hosts { BACKEND } else { SECOND_BACKEND };
            hosts.push(LabHost { name, address: *address, app, dir: host_dir, backend });
        }
        let mut sshd = Vec::with_capacity(hosts.len());
        for host in &hosts {
            sshd.push(servers::start_sshd(&host.name, host.address, ssh_port, &keys)?);
        }
        for (server, host) in sshd.iter_mut().zip(&hosts) {
            servers::wait_sshd(server, host.address, ssh_port);
        }
        let public = read(&keys.join("ssh_host_ed25519_key.pub"))?;
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        let known_hosts: String =
            hosts.iter().map(|h| format!("[{}]:{ssh_port} {kind} {key}\n", h.address)).collect();
        write(&keys.join("known_hosts"), &known_hosts)?;

        // The HAProxy boxes.
        let backend_servers: Vec<servers::BackendServer> = hosts
            .iter()
            .map(|h| servers::BackendServer { backend: h.backend, name: h.name.clone(), app: h.app })
            .collect();
        let mut haproxy = Vec::with_capacity(lb_addresses.len());
        for (i, address) in lb_addresses.iter().enumerate() {
            haproxy.push(LabHaproxy {
                address: *address,
                frontend: SocketAddr::from((*address, frontend_port)),
                second_frontend: frontends.get(1).map(|(_, port)| SocketAddr::from((*address, *port))),
                endpoint: LbEndpoint::Tcp { address: address.to_string(), port: api_port },
                process: servers::start_haproxy(
                    &format!("haproxy-{}", i + 1),
                    *address,
                    api_port,
                    &frontends,
                    &backend_servers,
                )?,
            });
        }

        // The Chef server, with every node registered.
        let goiardi = Goiardi::start();
        let mut nodes: Vec<(String, String, &'static str)> = hosts
            .iter()
            .map(|h| {
                let tag = if h.backend == BACKEND { WEB_TAG } else { SECOND_WEB_TAG };
                (h.name.clone(), h.address.to_string(), tag)
            })
            .collect();
        nodes.extend(
            haproxy
                .iter()
                .enumerate()
                .map(|(i, h)| (format!("lb-{}", i + 1), h.address.to_string(), HAPROXY_TAG)),
        );
        block(runtime.handle(), chef::register(&goiardi, &nodes))?;

        let config_path = root.join("vesemir.toml");
        let deploy_path = root.join("deploy.toml");
        let lab = Self {
            runtime: Some(runtime),
            shutdown,
            hosts,
            sshd: sshd.into_iter().map(Some).collect(),
            haproxy,
            goiardi,
            ssh_port,
            api_port,
            user: current_user()?,
            config_path,
            deploy_path,
            dir,
            _subnet: subnet,
        };
        write(&lab.config_path, &lab.config_text())?;
        write(&lab.deploy_path, &lab.deploy_text(&options))?;
        write(&lab.server_config_path(), &lab.server_config_text())?;
        lab.set_restart_times(options.restart_times)?;
        lab.wait_all_up(Duration::from_secs(30))?;
        Ok(lab)
    }

    fn config_text(&self) -> String {
        let root = self.dir.path().display();
        format!(
            "# Generated by the Vesemir lab: how to reach its Chef server, its hosts and their playbook.\n\
             [chef]\nserver_url = \"{url}\"\nclient_name = \"admin\"\nclient_key_path = \"{key}\"\nflavor = \"goiardi\"\n\n\
             [ssh]\nuser = \"{user}\"\nport = {port}\nkey = \"{root}/keys/id_ed25519\"\nknown_hosts = \"{root}/keys/known_hosts\"\n\n\
             [playbooks.lab]\nsteps = [{{ name = \"install\", run = \"bash {root}/step.sh {root}/hosts/{{host}} {{version}}\", timeout = \"30s\" }}]\n\n\
             [playbooks.lab.health]\ncommand = \"bash {root}/health.sh {root}/hosts/{{host}}\"\ntimeout = \"8s\"\ninterval = \"200ms\"\nload_balancer_up = true\n",
            url = self.goiardi.url,
            key = self.goiardi.admin_key_path.display(),
            user = self.user,
            port = self.ssh_port,
        )
    }

    /// `examples/lab/vesemir-server.toml` with this lab's directory and runtime API port: a
    /// `vesemir serve` configuration for two teams on the lab.
    fn server_config_text(&self) -> String {
        include_str!("../lab/vesemir-server.toml")
            .replace("@LAB@", &self.dir.path().display().to_string())
            .replace("@API_PORT@", &self.api_port.to_string())
    }

    /// The generated `vesemir-server.toml`: two teams' catalog (`lab` deploys `shop`, `search`
    /// deploys `search`), demo tokens, listening on 127.0.0.1:8080.
    pub fn server_config_path(&self) -> PathBuf {
        self.dir.path().join("vesemir-server.toml")
    }

    fn deploy_text(&self, options: &LabOptions) -> String {
        format!(
            "# Generated by the Vesemir lab: deploy a new version of the lab's app to every host tagged {WEB_TAG}.\n\
             application = \"shop\"\nenvironment = \"{ENVIRONMENT}\"\nteam = \"lab\"\nversion = \"{version}\"\nplaybook = \"lab\"\n\n\
             [targets]\ntags = [\"{WEB_TAG}\"]\n\n\
             [load_balancer]\nbackend = \"{BACKEND}\"\ndiscover = {{ tags = [\"{HAPROXY_TAG}\"], port = {api} }}\ndrain_timeout = \"10s\"\n\n\
             [strategy]\nconcurrency = {concurrency}\nmax_failures = 0\n",
            version = options.deploy_version,
            api = self.api_port,
            concurrency = options.concurrency,
        )
    }

    /// Runs `future` on the lab's runtime and waits for it (usable from any thread, also from
    /// inside another runtime).
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        block(self.handle(), future)
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle(),
            // Invariant: the runtime is only taken in Drop.
            None => unreachable!("the lab's runtime is gone only after drop"),
        }
    }

    /// The hosts, in name order.
    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> LabResult<&LabHost> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::new(format!("the lab has no host {name}")))
    }

    /// The two HAProxy boxes, each with its own address, frontend and runtime API.
    pub fn haproxy(&self) -> &[LabHaproxy] {
        &self.haproxy
    }

    /// Where the HAProxy frontends listen (of both backends, when the lab has two).
    pub fn frontends(&self) -> Vec<SocketAddr> {
        let first = self.haproxy.iter().map(|h| h.frontend);
        first.chain(self.haproxy.iter().filter_map(|h| h.second_frontend)).collect()
    }

    /// The lab backend on every HAProxy box.
    pub fn backend(&self) -> LabResult<Backend> {
        self.backend_named(BACKEND)
    }

    /// Backend `name` ([`BACKEND`] or [`SECOND_BACKEND`]) on every HAProxy box.
    fn backend_named(&self, name: &str) -> LabResult<Backend> {
        Ok(Backend {
            name: BackendName::new(name).context(|| format!("backend name {name}"))?,
            instances: self.haproxy.iter().map(|h| h.endpoint.clone()).collect(),
        })
    }

    /// The Chef server's URL.
    pub fn chef_url(&self) -> &str {
        &self.goiardi.url
    }

    /// The Chef admin client's key file.
    pub fn chef_key_path(&self) -> &Path {
        &self.goiardi.admin_key_path
    }

    /// The generated `vesemir.toml`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The generated deployment file.
    pub fn deploy_path(&self) -> &Path {
        &self.deploy_path
    }

    /// The lab's folder (config, keys, scripts, host files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SSH port every host's sshd listens on.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// The runtime API port of every HAProxy box.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The private key every host's sshd accepts, for an executor built directly.
    pub fn ssh_key(&self) -> PathBuf {
        self.dir.path().join("keys/id_ed25519")
    }

    /// The known_hosts file naming every host's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("keys/known_hosts")
    }

    /// The user the hosts are logged in as (the one running the lab: the hosts are this
    /// machine).
    pub fn ssh_user(&self) -> &str {
        &self.user
    }

    /// The deploy step's command line for `host` and `version`, as the playbook runs it.
    pub fn step_command(&self, host: &str, version: &str) -> String {
        let root = self.dir.path().display();
        format!("bash {root}/step.sh {root}/hosts/{host} {version}")
    }

    /// The health command for `host`, as the playbook runs it.
    pub fn health_command(&self, host: &str) -> String {
        let root = self.dir.path().display();
        format!("bash {root}/health.sh {root}/hosts/{host}")
    }

    /// The version `host`'s app serves now (`GET /` on the host itself), or why it cannot say.
    pub fn served_version(&self, host: &str) -> LabResult<String> {
        let app = self.host(host)?.app;
        match self.block_on(app::get(app, "/", Duration::from_secs(3))) {
            Ok((200, body)) => Ok(body.trim().to_owned()),
            Ok((status, body)) => {
                Err(LabError::new(format!("{host}'s app answered {status}: {}", body.trim())))
            }
            Err(e) => Err(LabError::new(format!("{host}'s app at {app}: {e}"))),
        }
    }

    /// Restarts `host`'s app with `version` behind Vesemir's back (no drain), as a careless
    /// operator would, and waits until it serves again: requests HAProxy sends to it while it
    /// is down fail.
    pub fn restart_app_undrained(&self, host: &str, version: &str) -> LabResult<()> {
        let dir = &self.host(host)?.dir;
        write(&dir.join(app::NEXT_VERSION_FILE), version)?;
        let marker = dir.join(app::RESTART_MARKER);
        write(&marker, "")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while marker.exists() {
            if Instant::now() >= deadline {
                return Err(LabError::new(format!("{host}'s app did not restart within 10 s")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Sets how long each host's app is down at its next restarts: host `i` (in name order)
    /// gets `times.time(i)`.
    pub fn set_restart_times(&self, times: RestartTimes) -> LabResult<()> {
        for (i, host) in self.hosts.iter().enumerate() {
            write(&host.dir.join(app::RESTART_TIME_FILE), &times.time(i).as_millis().to_string())?;
        }
        Ok(())
    }

    /// Makes `host`'s deploy step fail (exit code 7, a message on stderr).
    pub fn fail_step_on(&self, host: &str) -> LabResult<()> {
        write(&self.host(host)?.dir.join(STEP_FAILS_MARKER), "")
    }

    /// Makes `host`'s next release broken: after its restart `/health` answers 500, so neither
    /// the health command nor HAProxy's checks ever pass.
    pub fn break_release_on(&self, host: &str) -> LabResult<()> {
        write(&self.host(host)?.dir.join(BROKEN_RELEASE_MARKER), "")
    }

    /// Makes release `version` broken on `host` (a bad build that stays bad): whenever the app
    /// starts with that version, `/health` answers 500; other versions are healthy.
    pub fn break_version_on(&self, host: &str, version: &str) -> LabResult<()> {
        write(&self.host(host)?.dir.join(BROKEN_RELEASE_MARKER), version)
    }

    /// Heals `host`'s broken release for its next start (the fault is fixed).
    pub fn heal_release_on(&self, host: &str) -> LabResult<()> {
        let marker = self.host(host)?.dir.join(BROKEN_RELEASE_MARKER);
        match std::fs::remove_file(&marker) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LabError::new(format!("{}: {e}", marker.display()))),
        }
    }

    /// Stops `host`'s sshd: the host becomes unreachable over SSH (its app keeps serving).
    pub fn stop_sshd(&mut self, host: &str) -> LabResult<()> {
        let index = self
            .hosts
            .iter()
            .position(|h| h.name == host)
            .ok_or_else(|| LabError::new(format!("the lab has no host {host}")))?;
        if let Some(mut server) = self.sshd[index].take() {
            server.stop();
        }
        Ok(())
    }

    /// Starts `host`'s sshd again after [`stop_sshd`](Self::stop_sshd), and waits until it
    /// listens: the host is reachable over SSH once more. Nothing if it runs.
    pub fn start_sshd(&mut self, host: &str) -> LabResult<()> {
        let index = self
            .hosts
            .iter()
            .position(|h| h.name == host)
            .ok_or_else(|| LabError::new(format!("the lab has no host {host}")))?;
        if self.sshd[index].is_none() {
            let (name, address) = (self.hosts[index].name.clone(), self.hosts[index].address);
            let keys = self.dir.path().join("keys");
            let mut server = servers::start_sshd(&name, address, self.ssh_port, &keys)?;
            servers::wait_sshd(&mut server, address, self.ssh_port);
            self.sshd[index] = Some(server);
        }
        Ok(())
    }

    /// What every HAProxy box says of `host`'s server.
    pub fn lb_status(&self, host: &str) -> LabResult<Vec<InstanceState>> {
        let backend = self.backend_named(self.host(host)?.backend)?;
        let server = ServerName::new(host).context(|| format!("server name {host}"))?;
        self.block_on(async move {
            HaproxyLoadBalancer::new(HaproxyConfig::default())
                .status(&backend, &server)
                .await
                .context(|| format!("cannot read HAProxy's state of {host}"))
        })
    }

    /// Whether every HAProxy box has `host` UP at full weight.
    pub fn in_rotation(&self, host: &str) -> LabResult<bool> {
        Ok(self
            .lb_status(host)?
            .iter()
            .all(|s| s.status == ServerStatus::Up && s.weight == s.configured_weight))
    }

    /// The hosts some HAProxy box does not have UP at full weight.
    pub fn out_of_rotation(&self) -> LabResult<Vec<String>> {
        let mut out = Vec::new();
        for host in &self.hosts {
            if !self.in_rotation(&host.name)? {
                out.push(host.name.clone());
            }
        }
        Ok(out)
    }

    /// Waits until every HAProxy box has every host UP at full weight.
    pub fn wait_all_up(&self, timeout: Duration) -> LabResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.out_of_rotation()?;
            if out.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.haproxy.iter().map(|h| h.process.log()).collect();
                return Err(LabError::new(format!(
                    "lab hosts not UP on HAProxy after {timeout:?}: {out:?}\n{}",
                    logs.join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts steady traffic through both HAProxy frontends.
    pub fn start_load(&self, options: LoadOptions) -> LoadRun {
        LoadRun::start(self.handle(), self.frontends(), options)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(runtime) = self.runtime.take() {
            // Allowed from inside another runtime, unlike a plain drop.
            runtime.shutdown_background();
        }
        // The processes (sshd, haproxy, goiardi) and the files go with the fields.
    }
}

/// Runs `future` on `handle` from a thread of its own, so it works inside another runtime too.
fn block<F>(handle: &tokio::runtime::Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| handle.block_on(future))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The user running the lab (`id -un`): the lab's sshd log in as this user.
fn current_user() -> LabResult<String> {
    let output =
        std::process::Command::new("id").arg("-un").output().context(|| "cannot run id -un".into())?;
    let user = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if user.is_empty() {
        return Err(LabError::new("id -un named no user"));
    }
    Ok(user)
}

fn read(path: &Path) -> LabResult<String> {
    std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, text: &str) -> LabResult<()> {
    std::fs::write(path, text).context(|| format!("cannot write {}", path.display()))
}

fn create_dir(path: &Path) -> LabResult<()> {
    std::fs::create_dir_all(path).context(|| format!("cannot create {}", path.display()))
}
