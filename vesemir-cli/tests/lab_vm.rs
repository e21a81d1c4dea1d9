//! A new VM in one command, end to end through `vesemir serve` (issue 19), one lab for the
//! binary: a real named (TSIG, forward and reverse zone), libvirt TCG guests on a session
//! libvirtd, goiardi, slapd with a user alice; `vesemir serve` on SQLite with `[ldap]` and
//! `[vms]`, its `--config` holding `[chef]` and `[provision]`; then the built `vesemir`:
//!
//! - `vm create --owner alice --flavor small` exits 0 naming the DNS name and how to log in;
//!   the name resolves both ways through named; SSH answers with only the recorded host key
//!   (the printed known_hosts line; another key is refused); Chef search finds the node in its
//!   environment; `vm list -o json` and `vm show` show it;
//! - `vm create --owner nobody` exits 2 naming the owner;
//! - a second create while the hypervisor is full (`max_guests = 1`) exits 1 naming the step
//!   and the reason, and leaves nothing;
//! - `vm destroy NAME --yes` exits 0 and every record is gone: DNS, domain, volume, Chef node
//!   and client, the reservation row.
//!
//! The guest has no chef-client: its `/bin/chef-client` is the testkit's stand-in. Prints the
//! time to ready and each step's time (BENCHMARKS.md).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use vesemir_chef::{ChefClient, ChefConfig, ChefNodes, ClientKey, ServerFlavor};
use vesemir_core::name::EnvironmentName;
use vesemir_core::provision::{ChefRegistry, Dns, DnsZone, Fqdn, HypervisorPort};
use vesemir_provision::{DnsConfig, LibvirtConfig, NsupdateDns, VirshHypervisor};
use vesemir_testkit::goiardi::Goiardi;
use vesemir_testkit::libvirt::{LibvirtLab, POOL, TEMPLATE_VOLUME};
use vesemir_testkit::named::Named;
use vesemir_testkit::process::free_port;
use vesemir_testkit::slapd::{Slapd, SlapdUser};

use common::{text, Served};

const ZONE: &str = "lab.test";
const REVERSE_ZONE: &str = "55.127.in-addr.arpa";
const TOKEN: &str = "dev-team-token-for-vms";

/// Copies `from` into `dir` as a 0600 file: the configuration refuses keys others may read.
fn private_copy(from: &Path, dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    to
}

struct Lab {
    dir: tempfile::TempDir,
    _named: Named,
    libvirt: LibvirtLab,
    _goiardi: Goiardi,
    _slapd: Slapd,
    admin: ChefClient,
    dns: NsupdateDns,
    hypervisor: VirshHypervisor,
    served: Served,
    database: PathBuf,
}

impl Lab {
    async fn start() -> Self {
        let named = Named::start(ZONE, REVERSE_ZONE);
        let libvirt = LibvirtLab::start();
        let goiardi = Goiardi::start();
        let slapd = Slapd::start(&[SlapdUser::new("alice", "alice-pw", &["devs"])]);
        let dir = tempfile::tempdir().unwrap();
        let chef_key = private_copy(&goiardi.admin_key_path, dir.path(), "chef-admin.pem");
        let tsig_key = private_copy(&named.key_file(), dir.path(), "tsig.key");
        let guest_key = private_copy(&libvirt.client_key(), dir.path(), "guest_key");

        let mut chef =
            ChefConfig::new(goiardi.url.clone(), "admin", ClientKey::from_file(&chef_key).unwrap());
        chef.flavor = ServerFlavor::Goiardi;
        let admin = ChefClient::new(&chef).unwrap();
        admin
            .post(
                "/environments",
                &[],
                &json!({
                    "name": "production", "json_class": "Chef::Environment", "chef_type": "environment",
                    "description": "", "default_attributes": {}, "override_attributes": {}, "cookbook_versions": {},
                }),
            )
            .await
            .unwrap();

        let libvirt_config = LibvirtConfig {
            console_log: Some(libvirt.console_path("{name}").display().to_string()),
            ..LibvirtConfig::new(
                libvirt.uri().to_owned(),
                POOL.to_owned(),
                TEMPLATE_VOLUME.to_owned(),
                libvirt.domain_template(),
            )
        };
        let dns_config = DnsConfig::new(named.address(), tsig_key, DnsZone::new(REVERSE_ZONE).unwrap());
        let config = json!({
            "ssh": { "user": "root", "key": guest_key },
            "chef": {
                "server_url": goiardi.url, "client_name": "admin", "client_key_path": chef_key,
                "flavor": "goiardi", "request_timeout": "20s",
            },
            "provision": {
                "zone": ZONE,
                "environment": "production",
                "run_list": ["role[base]", "recipe[dev::vm]"],
                "host_key": "strict",
                "ssh_timeout": "120s",
                "bootstrap_timeout": "60s",
                "undo_attempts": 2,
                "addresses": "127.55.0.30-127.55.0.39",
                "call_timeout": "30s",
                "poll_interval": "200ms",
                "search_wait": "15s",
                "flavors": { "small": { "cores": 1, "memory_mib": 256, "disk_gib": 1 } },
                "hypervisors": [{
                    "name": "hv-1", "max_guests": 1, "cores": 4, "memory_mib": 2048, "disk_gib": 20,
                    "libvirt": libvirt_config,
                }],
                "dns": dns_config,
                "ssh": {
                    "identity_file": guest_key, "chef_server_url": goiardi.url,
                    "port": libvirt.ssh_port(), "connect_timeout": "5s",
                },
            },
        });
        let config = toml::Value::try_from(config).unwrap();
        let config_path = dir.path().join("vesemir.toml");
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

        let secret = dir.path().join("ldap-service.secret");
        std::fs::write(&secret, Slapd::SERVICE_PASSWORD).unwrap();
        let port = free_port();
        let database = dir.path().join("vesemir.db");
        let server_config = format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\n\n\
             [[tokens]]\nname = \"dev-ci\"\nsha256 = \"{hash}\"\nteam = \"dev\"\n\n\
             [ldap]\nurl = \"{url}\"\nbind_dn = \"{service}\"\nbind_password_file = \"{secret}\"\n\
             user_base = \"{people}\"\ngroup_base = \"{groups}\"\n\n\
             [[ldap.groups]]\ngroup = \"devs\"\nteams = [\"dev\"]\nroles = [\"deploy\", \"read\"]\n\n\
             [vms]\nmax_per_owner = 3\n\n[[vms.allow]]\nteam = \"dev\"\nflavors = [\"small\"]\n",
            db = database.display(),
            hash = vesemir_http::auth::sha256_hex(TOKEN.as_bytes()),
            url = slapd.url(),
            service = Slapd::SERVICE_DN,
            secret = secret.display(),
            people = Slapd::PEOPLE,
            groups = Slapd::GROUPS,
        );
        let server_config_path = dir.path().join("vesemir-server.toml");
        std::fs::write(&server_config_path, server_config).unwrap();

        let check = vesemir(dir.path(), &["config", "check", "--server-config", "vesemir-server.toml"]);
        assert_eq!(check.status.code(), Some(0), "config check: {}", text(&check));
        let summary = text(&check);
        assert!(summary.contains("flavors: small (1 cores, 256 MiB, 1 GiB)"), "{summary}");
        assert!(summary.contains("hypervisors: hv-1 (at most 1 guests"), "{summary}");
        assert!(summary.contains("addresses: 127.55.0.30-127.55.0.39 (10 addresses)"), "{summary}");

        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vesemir"))
            .args(["--config", "vesemir.toml", "serve", "--server-config", "vesemir-server.toml"])
            .current_dir(dir.path())
            .env_remove("VESEMIR_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let served = Served::listening(child, port);
        Self {
            dns: NsupdateDns::new(dns_config),
            hypervisor: VirshHypervisor::new(libvirt_config),
            dir,
            _named: named,
            libvirt,
            _goiardi: goiardi,
            _slapd: slapd,
            admin,
            served,
            database,
        }
    }

    /// The built `vesemir` against the server, with the dev team's token.
    fn vm(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
        command
            .arg("vm")
            .args(args)
            .current_dir(self.dir.path())
            .env("VESEMIR_SERVER", &self.served.url)
            .env("VESEMIR_TOKEN", TOKEN)
            .env_remove("VESEMIR_CONFIG")
            .stdin(Stdio::null());
        command.output().unwrap()
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The reservations the server's store holds, as `vm address hypervisor` rows.
    fn reservations(&self) -> Vec<String> {
        let output = Command::new("sqlite3")
            .arg(&self.database)
            .arg("SELECT * FROM vm_reservations")
            .output()
            .unwrap_or_else(|e| panic!("sqlite3 (Debian package sqlite3) does not run: {e}"));
        assert!(output.status.success(), "sqlite3: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
    }

    /// Nothing of `vm` is left: A record, PTR of every address of the range, domain, volume,
    /// Chef node and client, reservation.
    async fn assert_nothing_left(&self, vm: &str) {
        let name: Fqdn = format!("{vm}.{ZONE}").parse().unwrap();
        assert!(self.dns.resolve(&name).await.unwrap().is_empty(), "{vm}: A record left");
        for last in 30..=39 {
            let address = Ipv4Addr::new(127, 55, 0, last);
            let names = self.dns.reverse(address).await.unwrap();
            assert!(!names.contains(&name.to_string()), "{vm}: PTR of {address} left");
        }
        let guests = self.hypervisor.guests().await.unwrap();
        assert!(guests.iter().all(|guest| guest.name != vm), "{vm}: domain left: {guests:?}");
        let volumes = self.libvirt.virsh(&["vol-list", "--pool", POOL]);
        assert!(!volumes.contains(&format!("{vm}.img")), "{vm}: volume left: {volumes}");
        assert!(self.admin.get(&format!("/nodes/{name}"), &[]).await.is_err(), "{vm}: Chef node left");
        assert!(self.admin.get(&format!("/clients/{name}"), &[]).await.is_err(), "{vm}: Chef client left");
        let held = self.reservations();
        assert!(held.iter().all(|row| !row.contains(vm)), "{vm}: reservation left: {held:?}");
    }
}

fn vesemir(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vesemir"))
        .args(args)
        .current_dir(dir)
        .env_remove("VESEMIR_CONFIG")
        .output()
        .unwrap()
}

/// The value after `label` on the summary line that starts with it (`  address:     ...`).
fn field(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label} line:\n{out}"))
}

/// `ssh` to the guest at `address` as root, trusting only what `known_hosts` holds for the
/// name `alias`.
fn ssh(lab: &Lab, address: &str, alias: &str, known_hosts: &str) -> Output {
    let file = lab.dir.path().join("known_hosts.test");
    std::fs::write(&file, format!("{known_hosts}\n")).unwrap();
    Command::new("ssh")
        .args([
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", file.display()))
        .arg("-o")
        .arg(format!("HostKeyAlias={alias}"))
        .arg("-i")
        .arg(lab.dir.path().join("guest_key"))
        .arg("-p")
        .arg(lab.libvirt.ssh_port().to_string())
        .arg(format!("root@{address}"))
        .arg("echo logged-in")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_for_a_directory_user_in_one_command_through_the_server() {
    let lab = Lab::start().await;

    // An owner the directory does not know: refused before anything is built.
    let output = lab.vm(&["create", "--owner", "nobody", "--flavor", "small"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}\n{}", lab.server_log());
    assert!(out.contains("owner") && out.contains("nobody"), "{out}");

    // Alice's VM, followed step by step.
    let started = Instant::now();
    let output = lab.vm(&["create", "--owner", "alice", "--flavor", "small"]);
    let wall = started.elapsed();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}\n{}", lab.server_log());
    let name = field(&out, "DNS name:");
    assert_eq!(name, format!("alice-1.{ZONE}"), "{out}");
    assert_eq!(field(&out, "log in:"), format!("ssh alice@{name}"), "{out}");
    assert!(out.contains("bootstrap | node_name alice-1.lab.test"), "the bootstrap's output: {out}");
    assert!(out.contains("(the console showed the same key)"), "{out}");
    eprintln!("vm create: ready after {wall:?} (the command's wall time); its output:\n{out}");
    let address = field(&out, "address:").split_whitespace().next().unwrap().to_owned();
    let known_hosts = field(&out, "known_hosts:");
    let host_key = known_hosts.split_once(' ').unwrap().1.to_owned();
    assert!(known_hosts.starts_with(&format!("{name},{address} ssh-")), "{known_hosts}");

    // Its name resolves both ways through the test's named.
    let fqdn: Fqdn = name.parse().unwrap();
    let ip: Ipv4Addr = address.parse().unwrap();
    assert_eq!(lab.dns.resolve(&fqdn).await.unwrap(), vec![ip]);
    assert_eq!(lab.dns.reverse(ip).await.unwrap(), vec![name.clone()]);

    // SSH with only the printed known_hosts line logs in; a line with another key is refused.
    let login = ssh(&lab, &address, &name, &known_hosts);
    assert!(login.status.success(), "ssh with the recorded key: {}", text(&login));
    assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), "logged-in");
    let other =
        format!("{name},{address} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKey00");
    let refused = ssh(&lab, &address, &name, &other);
    assert_eq!(refused.status.code(), Some(255), "another key is refused: {}", text(&refused));
    assert!(text(&refused).contains("Host key verification failed"), "{}", text(&refused));

    // Chef search finds it in its environment, not in another.
    let chef = ChefNodes::new(lab.admin.clone());
    assert!(chef.find(&fqdn, &EnvironmentName::new("production").unwrap()).await.unwrap());
    assert!(!chef.find(&fqdn, &EnvironmentName::new("staging").unwrap()).await.unwrap());

    // The list and the VM as the API shows them.
    let output = lab.vm(&["list", "--owner", "alice", "-o", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    let vms = list["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 1, "{list}");
    assert_eq!((vms[0]["name"].as_str(), vms[0]["status"].as_str()), (Some("alice-1"), Some("ready")));
    assert_eq!(vms[0]["ssh_host_key"].as_str(), Some(host_key.as_str()));
    let output = lab.vm(&["show", "alice-1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains(&format!("host key:    {host_key}")), "{}", text(&output));
    assert_eq!(lab.reservations().len(), 1, "one reservation row");

    // The hypervisor is full (one guest of one): a second create fails at reserve, exit 1,
    // naming the step and the reason, and leaves nothing.
    let output = lab.vm(&["create", "--owner", "alice", "--flavor", "small", "--name", "alice-2"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}\n{}", lab.server_log());
    assert!(out.contains("VM alice-2 FAILED"), "{out}");
    assert!(out.contains("step reserve failed") && out.contains("no hypervisor has room"), "{out}");
    assert!(out.contains("nothing is left"), "{out}");
    lab.assert_nothing_left("alice-2").await;

    // Destroy: every record is gone.
    let output = lab.vm(&["destroy", "alice-1"]);
    assert_eq!(output.status.code(), Some(2), "no --yes off a terminal: {}", text(&output));
    let started = Instant::now();
    let output = lab.vm(&["destroy", "alice-1", "--yes"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}\n{}", lab.server_log());
    assert!(out.contains("VM alice-1 destroyed"), "{out}");
    assert!(!out.contains("bootstrap |"), "only the destroy's events: {out}");
    eprintln!("vm destroy: {:?}", started.elapsed());
    lab.assert_nothing_left("alice-1").await;
    assert!(lab.reservations().is_empty(), "no reservation row: {:?}", lab.reservations());
    assert!(lab.hypervisor.guests().await.unwrap().is_empty());
    let output = lab.vm(&["show", "alice-1", "-o", "json"]);
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["status"], "destroyed", "{view}");
}
