//! `vesemir.toml`: how to reach Chef, SSH and HAProxy, and the operator's playbooks. Every value
//! can be overridden by an environment variable `VESEMIR_<SECTION>_<KEY>` (e.g.
//! `VESEMIR_SSH_USER=deploy`). `vesemir config check` reports every problem at once, type
//! errors included, as the core's [`ValidationErrors`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vesemir_chef::ChefConfig;
use vesemir_core::key_file::{check_key_permissions, KeyFilePermissions};
use vesemir_core::request::spec::{self, ChangesetSpec};
use vesemir_core::request::{
    check_count, check_duration, validate_playbooks, FieldError, Playbooks, ValidationErrors,
    MAX_CALL_DURATION,
};
use vesemir_haproxy::HaproxyConfig;
use vesemir_ssh::{HostKeyMode, Passphrase, SshAuth, SshConfig};

use crate::overrides;
use crate::provision_config::{self, ProvisionSection, ProvisionSettings};

/// The passphrase of an encrypted SSH key comes from this variable, never from a file.
pub const PASSPHRASE_VARIABLE: &str = "VESEMIR_SSH_PASSPHRASE";

/// The whole configuration, validated: paths resolved against the file's directory.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// `[chef]`, when hosts are found by Chef search.
    pub chef: Option<ChefConfig>,
    /// `[inventory] file`: a static inventory, for users without Chef.
    pub inventory_file: Option<PathBuf>,
    /// `[ssh]`, the adapter's own config: its paths resolved against the file's directory (the
    /// key file and an explicitly set known_hosts checked readable), its passphrase from
    /// [`PASSPHRASE_VARIABLE`].
    pub ssh: SshConfig,
    /// `[haproxy]`: how the runtime API is reached (the adapter's own type and defaults).
    pub haproxy: HaproxyConfig,
    /// `[driver]`: bounds on port calls.
    pub driver: DriverSection,
    /// `[locks]`: host locks (one rollout per server).
    pub locks: LocksSection,
    /// `[playbooks.NAME]`, validated by the core.
    pub playbooks: Playbooks,
    /// `[provision]`: what `vesemir serve` builds VMs with (issue 19), checked.
    pub provision: Option<ProvisionSettings>,
}

/// `vesemir.toml` as written: each section optional here, required ones checked after.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    chef: Option<ChefConfig>,
    #[serde(default)]
    inventory: Option<InventorySection>,
    #[serde(default)]
    ssh: Option<SshConfig>,
    #[serde(default)]
    haproxy: HaproxyConfig,
    #[serde(default)]
    driver: DriverSection,
    #[serde(default)]
    locks: LocksSection,
    #[serde(default)]
    playbooks: BTreeMap<String, ChangesetSpec>,
    #[serde(default)]
    provision: Option<ProvisionSection>,
}

/// `[driver]`. Unset values take [`vesemir_core::DriverConfig`]'s defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSection {
    /// Bound on one quick call (connect, a load balancer change).
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
    /// Keep HAProxy's health checks running while a host is out (drained, not in maintenance,
    /// during its changeset; marked DOWN after it unless the checks saw the restart): a faster
    /// UP gate for playbooks with `load_balancer_up`, **only** for backends without
    /// persistence (cookies, stick tables, `use-server`), whose pinned requests would reach a
    /// drained server while it restarts. [`vesemir_core::DriverConfig::checks_while_out`];
    /// default `false`.
    #[serde(default)]
    pub checks_while_out: Option<bool>,
}

/// `[locks]`: the host locks every deployment takes (one rollout per server, across processes
/// and machines). Every deployer of a fleet, CLIs and servers alike, must use the same `dir`
/// and `stale_after`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocksSection {
    /// The lock directory on each host, when not `$HOME/.vesemir/lock` of the SSH user (a
    /// shared one, such as `/var/lib/vesemir/lock`, when deployers log in as different users).
    #[serde(default)]
    pub dir: Option<String>,
    /// A lock not refreshed for this long is abandoned (its deployer died) and the next
    /// deployer takes it over with a warning. Default [`DEFAULT_STALE_AFTER`].
    #[serde(default, with = "humantime_serde")]
    pub stale_after: Option<Duration>,
    /// How long a deployment waits for hosts another deployment holds: the default of
    /// `deploy --lock-wait`, and what `vesemir serve` deployments wait. Default zero: refuse.
    #[serde(default, with = "humantime_serde")]
    pub wait: Option<Duration>,
}

/// The default of `[locks] stale_after`: an hour.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3600);

impl LocksSection {
    /// `stale_after`, or its default.
    pub fn stale_after(&self) -> Duration {
        self.stale_after.unwrap_or(DEFAULT_STALE_AFTER)
    }
}

/// `[inventory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventorySection {
    file: PathBuf,
}

/// Every problem found in a configuration file, each as `FILE: KEY: REASON`.
#[derive(Debug)]
pub struct ConfigErrors {
    /// The configuration file, named in every line.
    pub path: PathBuf,
    /// The problems, type errors first.
    pub errors: ValidationErrors,
}

impl ConfigErrors {
    fn new(path: &Path, problems: Vec<FieldError>) -> Self {
        let errors = ValidationErrors::from_errors(problems)
            .unwrap_or_else(|| ValidationErrors::one(FieldError::new("(file)", "is incomplete")));
        Self { path: path.to_owned(), errors }
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.errors.errors().len();
        write!(f, "{}: {n} problem{}", self.path.display(), if n == 1 { "" } else { "s" })?;
        for e in self.errors.errors() {
            write!(f, "\n  {}: {}: {}", self.path.display(), e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, applies environment overrides then `overrides` (`KEY=VALUE`, from flags) and
    /// validates `path`, reporting every problem.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigErrors> {
        let fail = |reason: String| ConfigErrors::new(path, vec![FieldError::new("(file)", reason)]);
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read it ({e}): pass --config PATH or set VESEMIR_CONFIG")))?;
        let mut document: toml::Table =
            text.parse().map_err(|e: toml::de::Error| fail(format!("is not valid TOML: {}", e.message())))?;
        let mut problems = overrides::apply_env(&mut document, std::env::vars());
        for set in overrides {
            if let Err(reason) = overrides::apply_set(&mut document, "--config-set", set) {
                problems.push(FieldError::new("--config-set", reason));
            }
        }
        Self::from_table(path, &document, problems)
    }

    /// Reads the (overridden) document: type problems first, then every check on the values
    /// read, leaving out checks of values that stand in for unreadable ones.
    fn from_table(
        path: &Path,
        document: &toml::Table,
        mut problems: Vec<FieldError>,
    ) -> Result<Config, ConfigErrors> {
        let text = toml::to_string(document)
            .map_err(|e| ConfigErrors::new(path, vec![FieldError::new("(file)", e.to_string())]))?;
        let mut read = spec::read_toml::<ConfigFile>(&text)
            .map_err(|errors| ConfigErrors { path: path.to_owned(), errors })?;
        problems.append(&mut read.problems);
        let base = path.parent().unwrap_or(Path::new("."));
        let file = &mut read.value;
        let mut checks = Vec::new();
        if let Some(chef) = &mut file.chef {
            check_chef(chef, base, &mut checks);
        }
        let chef_configured = file.chef.is_some();
        let provision = file
            .provision
            .as_mut()
            .and_then(|section| provision_config::check(section, base, chef_configured, &mut checks));
        let inventory_file = file.inventory.as_ref().map(|i| resolve(base, &i.file));
        if let Some(file) = &inventory_file {
            if let Err(e) = crate::inventory_file::read(file) {
                checks.push(FieldError::new("inventory.file", e.to_string()));
            }
        }
        match &mut file.ssh {
            Some(ssh) => {
                let known_hosts_set = document.get("ssh").and_then(|ssh| ssh.get("known_hosts")).is_some();
                check_ssh(ssh, known_hosts_set, base, &mut checks)
            }
            None => checks
                .push(FieldError::new("ssh", "is missing: add [ssh] with user and key (or agent = true)")),
        }
        check_bounds(file, &mut checks);
        if file.locks.stale_after.is_some_and(|s| s < Duration::from_secs(10)) {
            checks.push(FieldError::new(
                "locks.stale_after",
                "is below 10s: a running deployment's locks would look abandoned; the default is 1h",
            ));
        }
        let playbooks = validate_playbooks(&file.playbooks);
        if let Err(errors) = &playbooks {
            checks.extend(errors.errors().iter().cloned());
        }
        problems.extend(checks.into_iter().filter(|e| !read.covers(&e.field)));
        let file = read.value;
        match (file.ssh, playbooks) {
            (Some(ssh), Ok(playbooks)) if problems.is_empty() => Ok(Config {
                path: path.to_owned(),
                chef: file.chef,
                inventory_file,
                ssh,
                haproxy: file.haproxy,
                driver: file.driver,
                locks: file.locks,
                playbooks,
                provision,
            }),
            _ => Err(ConfigErrors::new(path, problems)),
        }
    }
}

/// Resolves the key and CA bundle paths and checks they can be read.
fn check_chef(chef: &mut ChefConfig, base: &Path, problems: &mut Vec<FieldError>) {
    chef.client_key_path = resolve(base, &chef.client_key_path);
    check_private_key(problems, "chef.client_key_path", &chef.client_key_path);
    if let Some(ca) = &chef.ca_bundle {
        let ca = resolve(base, ca);
        check_file(problems, "chef.ca_bundle", &ca);
        chef.ca_bundle = Some(ca);
    }
}

/// Resolves the key (whose passphrase comes from [`PASSPHRASE_VARIABLE`]) and known_hosts paths;
/// checks the key is readable, the agent reachable, and known_hosts readable when set unless new
/// keys are accepted. (The adapter's serde form already refused both or neither of key and agent.)
fn check_ssh(ssh: &mut SshConfig, known_hosts_set: bool, base: &Path, problems: &mut Vec<FieldError>) {
    match &mut ssh.auth {
        SshAuth::KeyFile { path, passphrase } => {
            *path = resolve(base, path);
            check_private_key(problems, "ssh.key", path);
            *passphrase = std::env::var(PASSPHRASE_VARIABLE).ok().map(Passphrase::new);
        }
        SshAuth::Agent { socket: Some(socket) } => *socket = resolve(base, socket),
        SshAuth::Agent { socket: None } => {
            if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                problems.push(FieldError::new(
                    "ssh.agent",
                    "is true but SSH_AUTH_SOCK is not set: start ssh-agent or use ssh.key",
                ));
            }
        }
    }
    ssh.known_hosts = resolve(base, &ssh.known_hosts);
    if known_hosts_set && !matches!(ssh.host_key_mode, HostKeyMode::AcceptNew | HostKeyMode::Off) {
        check_file(problems, "ssh.known_hosts", &ssh.known_hosts);
    }
}

/// The most retries of one connection or call.
const MAX_RETRIES: u32 = 100;
/// The largest HAProxy reply accepted at most (it is held in memory): 1 GiB.
const MAX_REPLY_BYTES: u64 = 1 << 30;
/// The most connections to one HAProxy instance at once.
const MAX_CONNECTIONS: usize = 1024;

/// Upper bounds, so that no value overflows time arithmetic or memory: every timeout, back-off
/// and interval at most [`MAX_CALL_DURATION`] (1h), retries at most [`MAX_RETRIES`], HAProxy's
/// reply size and connections per instance at most [`MAX_REPLY_BYTES`] and [`MAX_CONNECTIONS`].
fn check_bounds(file: &ConfigFile, problems: &mut Vec<FieldError>) {
    let mut durations: Vec<(&str, Option<Duration>)> = vec![
        ("haproxy.connect_timeout", Some(file.haproxy.connect_timeout)),
        ("haproxy.read_timeout", Some(file.haproxy.read_timeout)),
        ("haproxy.poll_interval", Some(file.haproxy.poll_interval)),
        ("driver.call_timeout", file.driver.call_timeout),
    ];
    let mut retries = Vec::new();
    if let Some(chef) = &file.chef {
        durations.extend([
            ("chef.connect_timeout", Some(chef.connect_timeout)),
            ("chef.request_timeout", Some(chef.request_timeout)),
            ("chef.retry_backoff", Some(chef.retry_backoff)),
            ("chef.max_retry_backoff", Some(chef.max_retry_backoff)),
        ]);
        retries.push(("chef.retries", chef.retries));
    }
    if let Some(ssh) = &file.ssh {
        durations.extend([
            ("ssh.connect_timeout", Some(ssh.connect_timeout)),
            ("ssh.retry_backoff", Some(ssh.retry_backoff)),
        ]);
        retries.push(("ssh.connect_retries", ssh.connect_retries));
    }
    for (field, value) in durations {
        if let Some(Err(problem)) = value.map(|v| check_duration(field, v, MAX_CALL_DURATION)) {
            problems.push(problem);
        }
    }
    for (field, value) in retries {
        problems.extend(check_count(field, value, 0, MAX_RETRIES).err());
    }
    let haproxy = &file.haproxy;
    problems
        .extend(check_count("haproxy.max_reply_bytes", haproxy.max_reply_bytes, 0, MAX_REPLY_BYTES).err());
    let connections = haproxy.max_connections_per_instance;
    problems
        .extend(check_count("haproxy.max_connections_per_instance", connections, 0, MAX_CONNECTIONS).err());
}

/// `path` with `~` expanded, relative to `base` unless absolute.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    let expanded = match path.strip_prefix("~") {
        Ok(rest) => {
            std::env::var_os("HOME").map_or_else(|| path.to_owned(), |home| PathBuf::from(home).join(rest))
        }
        Err(_) => path.to_owned(),
    };
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

/// A private key file: readable, and by nobody else (the core's rule, with ssh's words).
pub(crate) fn check_private_key(problems: &mut Vec<FieldError>, key: &str, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    match std::fs::File::open(path).and_then(|file| file.metadata()) {
        Err(e) => problems.push(FieldError::new(key, format!("cannot read {}: {e}", path.display()))),
        Ok(metadata) => {
            let permissions = KeyFilePermissions { mode: metadata.mode(), owner_uid: metadata.uid() };
            if let Err(unprotected) = check_key_permissions(path, permissions) {
                problems.push(FieldError::new(key, unprotected.to_string()));
            }
        }
    }
}

fn check_file(problems: &mut Vec<FieldError>, key: &str, path: &Path) {
    if let Err(e) = std::fs::File::open(path) {
        problems.push(FieldError::new(key, format!("cannot read {}: {e}", path.display())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file with `mode`, owned by someone other than root (a test run as root gives it
    /// to `nobody`), so that the root-owned exception does not apply.
    fn write_key(path: &Path, mode: u32) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::write(path, "key").expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        if std::fs::metadata(path).expect("stat").uid() == 0 {
            std::os::unix::fs::chown(path, Some(65534), None).expect("chown to nobody");
        }
    }

    #[test]
    fn private_keys_others_may_read_are_refused_with_the_file_the_mode_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_key(&dir.path().join("id_ed25519"), 0o644);
        write_key(&dir.path().join("chef.pem"), 0o640);
        let text = r#"
[chef]
server_url = "https://chef.example"
client_name = "vesemir"
client_key_path = "chef.pem"

[ssh]
user = "deploy"
key = "id_ed25519"
"#;
        let errors = load(text, dir.path()).expect_err("problems");
        let lines: Vec<String> = errors.errors.errors().iter().map(ToString::to_string).collect();
        let (ssh, chef) = (dir.path().join("id_ed25519"), dir.path().join("chef.pem"));
        assert_eq!(
            lines,
            [
                format!("chef.client_key_path: UNPROTECTED PRIVATE KEY FILE: permissions 0640 for {c} are too open (its group may use it); a private key must not be accessible by others: run `chmod 600 {c}`", c = chef.display()),
                format!("ssh.key: UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {s} are too open (any user of the machine may use it); a private key must not be accessible by others: run `chmod 600 {s}`", s = ssh.display()),
            ]
        );
        for key in [&ssh, &chef] {
            write_key(key, 0o600);
        }
        load(text, dir.path()).expect("0600 keys are accepted");
    }

    fn load(text: &str, dir: &Path) -> Result<Config, ConfigErrors> {
        let path = dir.join("vesemir.toml");
        std::fs::write(&path, text).expect("write");
        let document: toml::Table = text.parse().expect("toml");
        Config::from_table(&path, &document, Vec::new())
    }

    #[test]
    fn every_problem_at_once_with_file_and_key_type_errors_included() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"
[ssh]
user = "deploy"
key = "missing_key"
host_key_mode = "trusting"
colour = "blue"

[haproxy]
read_timeout = "soon"

[playbooks.web]
steps = []

[extras]
"#;
        let errors = load(text, dir.path()).expect_err("problems");
        let keys: Vec<&str> = errors.errors.errors().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            keys,
            [
                "extras",
                "haproxy.read_timeout",
                "ssh.colour",
                "ssh.host_key_mode",
                "ssh.key",
                "playbooks.web.steps"
            ],
            "type errors hide no other problem: {errors}"
        );
        let rendered = errors.to_string();
        assert!(rendered.contains("vesemir.toml: 6 problems"), "{rendered}");
    }

    #[test]
    fn checks_while_out_reaches_the_driver_and_a_non_boolean_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_key(&dir.path().join("id_ed25519"), 0o600);
        let ssh = "[ssh]\nuser = \"deploy\"\nkey = \"id_ed25519\"\n";
        let off = load(ssh, dir.path()).expect("valid");
        assert!(!crate::compose::driver_config(&off).checks_while_out, "off by default");
        let on = load(&format!("{ssh}[driver]\nchecks_while_out = true\n"), dir.path()).expect("valid");
        assert!(crate::compose::driver_config(&on).checks_while_out);
        let errors = load(&format!("{ssh}[driver]\nchecks_while_out = \"yes\"\n"), dir.path())
            .expect_err("a string is no boolean");
        let keys: Vec<&str> = errors.errors.errors().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(keys, ["driver.checks_while_out"], "{errors}");
    }

    #[test]
    fn durations_and_counts_past_their_bounds_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_key(&dir.path().join("id_ed25519"), 0o600);
        let text = r#"
[ssh]
user = "deploy"
key = "id_ed25519"
connect_timeout = "10000000000000000000s"
connect_retries = 4294967295

[haproxy]
read_timeout = "2h"
max_reply_bytes = 9223372036854775807

[driver]
call_timeout = "1h"
"#;
        let errors = load(text, dir.path()).expect_err("problems");
        let lines: Vec<String> = errors.errors.errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "haproxy.read_timeout: 2h is above the limit of 1h",
                "ssh.connect_timeout: 10000000000000000000s is above the limit of 1h",
                "ssh.connect_retries: 4294967295 is above the limit of 100",
                "haproxy.max_reply_bytes: 9223372036854775807 is above the limit of 1073741824",
            ]
        );
    }

    /// Odd values: huge, negative, floats, NUL, odd Unicode, long strings, nested arrays.
    fn odd_value() -> impl proptest::strategy::Strategy<Value = toml::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(toml::Value::Integer(i64::MAX)),
            Just(toml::Value::Integer(i64::MIN)),
            Just(toml::Value::Integer(-1)),
            Just(toml::Value::Float(1e300)),
            Just(toml::Value::Float(-0.5)),
            Just(toml::Value::Boolean(true)),
            Just(toml::Value::String("a\u{0}b".into())),
            Just(toml::Value::String("10000000000000000000s".into())),
            Just(toml::Value::String("\u{202e}🦀\u{200b}".into())),
            Just(toml::Value::String("z".repeat(50_000))),
            ".{0,30}".prop_map(toml::Value::String),
            any::<i64>().prop_map(toml::Value::Integer),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256, failure_persistence: None, ..Default::default()
        })]

        /// A valid file with values replaced by odd ones (or unknown keys added) is answered,
        /// every problem naming a key. Never a panic.
        #[test]
        fn odd_configs_are_answered_naming_keys(
            edits in proptest::collection::vec(
                (proptest::sample::select(vec!["ssh", "haproxy", "driver", "chef", "inventory", "playbooks", "extra"]),
                 "[a-z_]{1,16}", odd_value()), 1..5)
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            write_key(&dir.path().join("id_ed25519"), 0o600);
            let mut document: toml::Table = r#"
[ssh]
user = "deploy"
key = "id_ed25519"
connect_timeout = "5s"
connect_retries = 2
[haproxy]
read_timeout = "5s"
max_reply_bytes = 1000000
[driver]
call_timeout = "30s"
[playbooks.web]
steps = [{ name = "install", run = "install {version}" }]
"#.parse().expect("toml");
            for (section, key, value) in edits {
                let table = document.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match table {
                    toml::Value::Table(t) => {
                        let known: Vec<String> = t.keys().cloned().collect();
                        // Half the time an existing key, else a new one.
                        let key = known.iter().find(|k| k.len() % 2 == key.len() % 2).cloned().unwrap_or(key);
                        t.insert(key, value);
                    }
                    other => *other = value,
                }
            }
            let path = dir.path().join("vesemir.toml");
            if let Err(errors) = Config::from_table(&path, &document, Vec::new()) {
                for e in errors.errors.errors() {
                    proptest::prop_assert!(!e.field.is_empty(), "a problem without a key: {e:?}");
                }
            }
        }
    }

    #[test]
    fn a_good_config_loads_with_relative_paths_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_key(&dir.path().join("id_ed25519"), 0o600);
        std::fs::write(dir.path().join("known_hosts"), "").expect("write");
        let text = r#"
[ssh]
user = "deploy"
key = "id_ed25519"
known_hosts = "known_hosts"

[playbooks.web]
steps = [{ name = "install", run = "install {version}" }]
[playbooks.web.health]
command = "true"
"#;
        let config = load(text, dir.path()).expect("valid");
        assert!(
            matches!(&config.ssh.auth, SshAuth::KeyFile { path, .. } if *path == dir.path().join("id_ed25519")),
            "{:?}",
            config.ssh
        );
        assert_eq!(config.ssh.known_hosts, dir.path().join("known_hosts"));
        assert_eq!(config.playbooks.len(), 1);
    }

    #[test]
    fn ssh_needs_exactly_one_of_key_and_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (text, says) in [
            ("[ssh]\nuser = \"u\"\nkey = \"k\"\nagent = true\n", "not both"),
            ("[ssh]\nuser = \"u\"\n", "agent = true"),
            ("[playbooks]\n", "is missing"),
        ] {
            let errors = load(text, dir.path()).expect_err(text);
            let ssh = errors.errors.errors().iter().find(|e| e.field == "ssh").expect("an ssh problem");
            assert!(ssh.message.contains(says), "{text}: {errors}");
        }
    }
}
