//! `vesemir.toml`: how to reach Chef, SSH and HAProxy, and the operator's playbooks. Every value
//! can be overridden by an environment variable `VESEMIR_<SECTION>_<KEY>` (e.g.
//! `VESEMIR_SSH_USER=deploy`). `vesemir config check` reports every problem at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vesemir_chef::ChefConfig;
use vesemir_core::name::PlaybookName;
use vesemir_core::request::spec::ChangesetSpec;
use vesemir_core::request::Playbooks;
use vesemir_haproxy::HaproxyConfig;
use vesemir_ssh::HostKeyMode;

/// Sections that environment variables may override.
const SECTIONS: [&str; 5] = ["chef", "inventory", "ssh", "haproxy", "driver"];

/// Variables that look like overrides but are not.
const NOT_OVERRIDES: [&str; 3] = ["VESEMIR_SSH_PASSPHRASE", "VESEMIR_CONFIG", "VESEMIR_TOKEN"];

/// The whole configuration, validated.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Chef, when hosts are found by search.
    pub chef: Option<ChefConfig>,
    /// A static inventory file, for users without Chef.
    pub inventory_file: Option<PathBuf>,
    /// SSH.
    pub ssh: SshSection,
    /// HAProxy's runtime API.
    pub haproxy: HaproxyConfig,
    /// Bounds on port calls.
    pub driver: DriverSection,
    /// The operator's playbooks.
    pub playbooks: Playbooks,
}

/// `[ssh]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    /// The remote user.
    pub user: String,
    /// The SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// A private key file (ed25519 or RSA). Its passphrase, if any, comes from
    /// `VESEMIR_SSH_PASSPHRASE`, never from this file.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Use ssh-agent (`SSH_AUTH_SOCK`) instead of a key file.
    #[serde(default)]
    pub agent: bool,
    /// The known_hosts file. Default `~/.ssh/known_hosts`.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// `strict` (default), `accept-new` or `off`.
    #[serde(default)]
    pub host_key_mode: Option<String>,
    /// Connect timeout.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Connect retries.
    #[serde(default)]
    pub connect_retries: Option<u32>,
}

fn default_ssh_port() -> u16 {
    22
}

/// `[driver]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSection {
    /// Bound on one quick call (connect, a load balancer change).
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
}

/// `[inventory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventorySection {
    file: PathBuf,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, e.g. `ssh.key`.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Every problem found in a configuration file.
#[derive(Debug)]
pub struct ConfigErrors {
    /// The file.
    pub path: PathBuf,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{}", self.path.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {}: {}: {}", self.path.display(), p.key, p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, applies environment overrides then `overrides` (`KEY=VALUE`, from flags) and
    /// validates `path`, reporting every problem.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigErrors> {
        let fail = |key: &str, reason: String| ConfigErrors {
            path: path.to_owned(),
            problems: vec![Problem { key: key.to_owned(), reason }],
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail("(file)", format!("cannot read it ({e}): pass --config PATH or set VESEMIR_CONFIG"))
        })?;
        let mut document: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail("(file)", format!("is not valid TOML: {}", e.message())))?;
        let mut problems = Vec::new();
        apply_env_overrides(&mut document, std::env::vars(), &mut problems);
        for set in overrides {
            if let Err(e) = crate::request::apply_set(&mut document, set) {
                problems.push(Problem { key: "--config-set".into(), reason: e.message });
            }
        }
        Self::from_table(path, document, problems)
    }

    fn from_table(
        path: &Path,
        mut document: toml::Table,
        mut problems: Vec<Problem>,
    ) -> Result<Config, ConfigErrors> {
        let base = path.parent().unwrap_or(Path::new("."));
        for key in document.keys() {
            if !SECTIONS.contains(&key.as_str()) && key != "playbooks" {
                problems.push(Problem {
                    key: key.clone(),
                    reason: format!("unknown section: expected one of {}, playbooks", SECTIONS.join(", ")),
                });
            }
        }
        let mut chef: Option<ChefConfig> = section(&mut document, "chef", &mut problems);
        let inventory: Option<InventorySection> = section(&mut document, "inventory", &mut problems);
        let ssh: Option<SshSection> = section(&mut document, "ssh", &mut problems);
        let haproxy: Option<HaproxyConfig> = section(&mut document, "haproxy", &mut problems);
        let driver: Option<DriverSection> = section(&mut document, "driver", &mut problems);

        if let Some(chef) = &mut chef {
            chef.client_key_path = resolve(base, &chef.client_key_path);
            check_file(&mut problems, "chef.client_key_path", &chef.client_key_path);
            if let Some(ca) = &chef.ca_bundle {
                let ca = resolve(base, ca);
                check_file(&mut problems, "chef.ca_bundle", &ca);
                chef.ca_bundle = Some(ca);
            }
        }
        let inventory_file = inventory.map(|i| resolve(base, &i.file));
        if let Some(file) = &inventory_file {
            match crate::inventory_file::read(file) {
                Ok(_) => {}
                Err(e) => problems.push(Problem { key: "inventory.file".into(), reason: e.to_string() }),
            }
        }
        let ssh = match ssh {
            Some(mut ssh) => {
                match (&ssh.key, ssh.agent) {
                    (Some(_), true) => problems.push(Problem {
                        key: "ssh".into(),
                        reason: "sets both key and agent = true: use one of them".into(),
                    }),
                    (None, false) => problems.push(Problem {
                        key: "ssh".into(),
                        reason: "needs key = \"/path/to/private_key\" or agent = true".into(),
                    }),
                    (Some(key), false) => {
                        let key = resolve(base, key);
                        check_file(&mut problems, "ssh.key", &key);
                        ssh.key = Some(key);
                    }
                    (None, true) => {
                        if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                            problems.push(Problem {
                                key: "ssh.agent".into(),
                                reason:
                                    "is true but SSH_AUTH_SOCK is not set: start ssh-agent or use ssh.key"
                                        .into(),
                            });
                        }
                    }
                }
                let mode = ssh.host_key_mode.as_deref().map(str::parse::<HostKeyMode>);
                if let Some(Err(e)) = &mode {
                    problems.push(Problem { key: "ssh.host_key_mode".into(), reason: e.to_string() });
                }
                if let Some(known_hosts) = &ssh.known_hosts {
                    let known_hosts = resolve(base, known_hosts);
                    if !matches!(mode, Some(Ok(HostKeyMode::AcceptNew | HostKeyMode::Off))) {
                        check_file(&mut problems, "ssh.known_hosts", &known_hosts);
                    }
                    ssh.known_hosts = Some(known_hosts);
                }
                Some(ssh)
            }
            None => {
                if !problems.iter().any(|p| p.key.starts_with("ssh")) {
                    problems.push(Problem {
                        key: "ssh".into(),
                        reason: "is missing: add [ssh] with user and key (or agent = true)".into(),
                    });
                }
                None
            }
        };

        let mut playbooks = Playbooks::new();
        if let Some(value) = document.remove("playbooks") {
            match value {
                toml::Value::Table(table) => {
                    for (name, value) in table {
                        let key = format!("playbooks.{name}");
                        let Ok(playbook) = PlaybookName::new(&name) else {
                            problems.push(Problem {
                                key,
                                reason: "is not a valid playbook name (letters, digits, '-', '_', '.')"
                                    .into(),
                            });
                            continue;
                        };
                        match value.try_into::<ChangesetSpec>() {
                            Ok(spec) => match spec.validate() {
                                Ok(changeset) => {
                                    playbooks.insert(playbook, changeset);
                                }
                                Err(errors) => problems.extend(errors.errors().iter().map(|e| Problem {
                                    key: format!("{key}.{}", e.field),
                                    reason: e.message.clone(),
                                })),
                            },
                            Err(e) => problems.push(Problem { key, reason: e.message().to_owned() }),
                        }
                    }
                }
                _ => problems
                    .push(Problem { key: "playbooks".into(), reason: "must be a table of playbooks".into() }),
            }
        }

        if !problems.is_empty() {
            return Err(ConfigErrors { path: path.to_owned(), problems });
        }
        match ssh {
            Some(ssh) => Ok(Config {
                path: path.to_owned(),
                chef,
                inventory_file,
                ssh,
                haproxy: haproxy.unwrap_or_default(),
                driver: driver.unwrap_or_default(),
                playbooks,
            }),
            None => Err(ConfigErrors {
                path: path.to_owned(),
                problems: vec![Problem { key: "ssh".into(), reason: "is missing".into() }],
            }),
        }
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

fn check_file(problems: &mut Vec<Problem>, key: &str, path: &Path) {
    if let Err(e) = std::fs::File::open(path) {
        problems
            .push(Problem { key: key.to_owned(), reason: format!("cannot read {}: {e}", path.display()) });
    }
}

/// Takes `[name]` out of the document and deserializes it, recording a problem with the key.
fn section<T: serde::de::DeserializeOwned>(
    document: &mut toml::Table,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = document.remove(name)?;
    match value.try_into::<T>() {
        Ok(section) => Some(section),
        Err(e) => {
            let message = e.message().to_owned();
            let key = match message.split('`').nth(1) {
                Some(field)
                    if message.starts_with("unknown field") || message.starts_with("missing field") =>
                {
                    format!("{name}.{field}")
                }
                _ => name.to_owned(),
            };
            problems.push(Problem { key, reason: message });
            None
        }
    }
}

/// Applies `VESEMIR_<SECTION>_<KEY>=value` overrides. The value is read as a TOML value when it
/// parses as one (`22`, `true`, `"x"`), else as a string.
fn apply_env_overrides(
    document: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
    problems: &mut Vec<Problem>,
) {
    for (name, value) in vars {
        if NOT_OVERRIDES.contains(&name.as_str()) {
            continue;
        }
        let Some(rest) = name.strip_prefix("VESEMIR_") else { continue };
        let lower = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| lower.starts_with(&format!("{s}_"))) else { continue };
        let key = lower[section.len() + 1..].to_owned();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let entry =
            document.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(table) => {
                table.insert(key, parsed);
            }
            _ => problems.push(Problem {
                key: section.to_string(),
                reason: format!("must be a table (set by {name})"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, dir: &Path) -> Result<Config, ConfigErrors> {
        let path = dir.join("vesemir.toml");
        std::fs::write(&path, text).expect("write");
        let document: toml::Table = text.parse().expect("toml");
        Config::from_table(&path, document, Vec::new())
    }

    #[test]
    fn every_problem_at_once_with_file_and_key() {
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
        let keys: Vec<&str> = errors.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["extras", "ssh.colour", "haproxy", "playbooks.web.steps"], "{errors}");
        let rendered = errors.to_string();
        assert!(rendered.contains("vesemir.toml: 4 problems"), "{rendered}");
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

    #[test]
    fn environment_overrides_apply_typed_values() {
        let mut document: toml::Table = "[ssh]\nuser = \"a\"\n".parse().expect("toml");
        let vars = vec![
            ("VESEMIR_SSH_USER".to_owned(), "deploy".to_owned()),
            ("VESEMIR_SSH_PORT".to_owned(), "2222".to_owned()),
            ("VESEMIR_SSH_PASSPHRASE".to_owned(), "secret".to_owned()),
            ("VESEMIR_HAPROXY_READ_TIMEOUT".to_owned(), "9s".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let mut problems = Vec::new();
        apply_env_overrides(&mut document, vars.into_iter(), &mut problems);
        assert!(problems.is_empty());
        let ssh = document["ssh"].as_table().expect("table");
        assert_eq!(ssh["user"].as_str(), Some("deploy"));
        assert_eq!(ssh["port"].as_integer(), Some(2222));
        assert!(!ssh.contains_key("passphrase"), "the passphrase is not a config key");
        assert_eq!(document["haproxy"]["read_timeout"].as_str(), Some("9s"));
    }
}
