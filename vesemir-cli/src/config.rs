//! `vesemir.toml`: how to reach Chef, SSH and HAProxy, and the operator's playbooks. Every value
//! can be overridden by an environment variable `VESEMIR_<SECTION>_<KEY>` (e.g.
//! `VESEMIR_SSH_USER=deploy`). `vesemir config check` reports every problem at once, type
//! errors included, as the core's [`ValidationErrors`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use vesemir_chef::ChefConfig;
use vesemir_core::request::spec::{self, ChangesetSpec};
use vesemir_core::request::{validate_playbooks, FieldError, Playbooks, ValidationErrors};
use vesemir_haproxy::HaproxyConfig;
use vesemir_ssh::HostKeyMode;

use crate::overrides;

/// The whole configuration, validated: paths resolved against the file's directory.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// `[chef]`, when hosts are found by Chef search.
    pub chef: Option<ChefConfig>,
    /// `[inventory] file`: a static inventory, for users without Chef.
    pub inventory_file: Option<PathBuf>,
    /// `[ssh]`, checked: exactly one of a readable key file or the agent.
    pub ssh: SshSection,
    /// `[haproxy]`: how the runtime API is reached (the adapter's own type and defaults).
    pub haproxy: HaproxyConfig,
    /// `[driver]`: bounds on port calls.
    pub driver: DriverSection,
    /// `[locks]`: host locks (one rollout per server).
    pub locks: LocksSection,
    /// `[playbooks.NAME]`, validated by the core.
    pub playbooks: Playbooks,
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
    ssh: Option<SshSection>,
    #[serde(default)]
    haproxy: HaproxyConfig,
    #[serde(default)]
    driver: DriverSection,
    #[serde(default)]
    locks: LocksSection,
    #[serde(default)]
    playbooks: BTreeMap<String, ChangesetSpec>,
}

/// `[ssh]`. Unset values take [`vesemir_ssh::SshConfig::new`]'s defaults. (The adapter's config
/// does not deserialize itself yet, hence this mirror.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    /// The remote user.
    pub user: String,
    /// The SSH port, when not 22.
    #[serde(default)]
    pub port: Option<u16>,
    /// A private key file (ed25519 or RSA). Its passphrase, if any, comes from
    /// `VESEMIR_SSH_PASSPHRASE`, never from this file.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Use ssh-agent (`SSH_AUTH_SOCK`) instead of a key file.
    #[serde(default)]
    pub agent: bool,
    /// The known_hosts file, when not `~/.ssh/known_hosts`.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// `strict` (the default), `accept-new` or `off`.
    #[serde(default, deserialize_with = "host_key_mode")]
    pub host_key_mode: Option<HostKeyMode>,
    /// The bound on one connection attempt.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// How many times a failed connection is tried again.
    #[serde(default)]
    pub connect_retries: Option<u32>,
}

fn host_key_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<HostKeyMode>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// `[driver]`. Unset values take [`vesemir_core::DriverConfig`]'s defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSection {
    /// Bound on one quick call (connect, a load balancer change).
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
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
        let inventory_file = file.inventory.as_ref().map(|i| resolve(base, &i.file));
        if let Some(file) = &inventory_file {
            if let Err(e) = crate::inventory_file::read(file) {
                checks.push(FieldError::new("inventory.file", e.to_string()));
            }
        }
        match &mut file.ssh {
            Some(ssh) => check_ssh(ssh, base, &mut checks),
            None => checks
                .push(FieldError::new("ssh", "is missing: add [ssh] with user and key (or agent = true)")),
        }
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
            }),
            _ => Err(ConfigErrors::new(path, problems)),
        }
    }
}

/// Resolves the key and CA bundle paths and checks they can be read.
fn check_chef(chef: &mut ChefConfig, base: &Path, problems: &mut Vec<FieldError>) {
    chef.client_key_path = resolve(base, &chef.client_key_path);
    check_file(problems, "chef.client_key_path", &chef.client_key_path);
    if let Some(ca) = &chef.ca_bundle {
        let ca = resolve(base, ca);
        check_file(problems, "chef.ca_bundle", &ca);
        chef.ca_bundle = Some(ca);
    }
}

/// Exactly one of a readable key or the agent; a readable known_hosts unless new keys are
/// accepted. Resolves the paths.
fn check_ssh(ssh: &mut SshSection, base: &Path, problems: &mut Vec<FieldError>) {
    match (&ssh.key, ssh.agent) {
        (Some(_), true) => {
            problems.push(FieldError::new("ssh", "sets both key and agent = true: use one of them"))
        }
        (None, false) => {
            problems.push(FieldError::new("ssh", "needs key = \"/path/to/private_key\" or agent = true"))
        }
        (Some(key), false) => {
            let key = resolve(base, key);
            check_file(problems, "ssh.key", &key);
            ssh.key = Some(key);
        }
        (None, true) => {
            if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                problems.push(FieldError::new(
                    "ssh.agent",
                    "is true but SSH_AUTH_SOCK is not set: start ssh-agent or use ssh.key",
                ));
            }
        }
    }
    if let Some(known_hosts) = &ssh.known_hosts {
        let known_hosts = resolve(base, known_hosts);
        if !matches!(ssh.host_key_mode, Some(HostKeyMode::AcceptNew | HostKeyMode::Off)) {
            check_file(problems, "ssh.known_hosts", &known_hosts);
        }
        ssh.known_hosts = Some(known_hosts);
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
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

fn check_file(problems: &mut Vec<FieldError>, key: &str, path: &Path) {
    if let Err(e) = std::fs::File::open(path) {
        problems.push(FieldError::new(key, format!("cannot read {}: {e}", path.display())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_good_config_loads_with_relative_paths_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("id_ed25519"), "key").expect("write");
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
        assert_eq!(config.ssh.key.as_deref(), Some(dir.path().join("id_ed25519").as_path()));
        assert_eq!(config.playbooks.len(), 1);
    }
}
