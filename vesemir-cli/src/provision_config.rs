//! `[provision]` of `vesemir.toml` (issue 19): what `vesemir serve` builds VMs with. The zone,
//! Chef environment and run list, the host key policy and step bounds, the address range, the
//! flavors and hypervisors, and the adapters' own configs: `[provision.dns]` is
//! [`DnsConfig`], `[provision.ssh]` is [`GuestSshConfig`], each hypervisor's `libvirt` table is
//! a [`LibvirtConfig`]. Chef writes go through the `[chef]` section's client.
//!
//! ```toml
//! [provision]
//! zone = "dev.example.com"
//! environment = "production"
//! run_list = ["role[base]"]
//! host_key = "strict"              # or "record_first" (trust on first use)
//! ssh_timeout = "5m"
//! bootstrap_timeout = "30m"
//! undo_attempts = 3
//! addresses = "10.0.0.10-10.0.0.200"   # or first = "..." and last = "..."
//! login_user = "dev"               # default: the owner's own name
//!
//! [provision.flavors.small]
//! cores = 2
//! memory_mib = 5120
//! disk_gib = 40
//!
//! [[provision.hypervisors]]
//! name = "hv-1"
//! max_guests = 11
//! cores = 22
//! memory_mib = 56320
//! disk_gib = 440
//! [provision.hypervisors.libvirt]
//! uri = "qemu+ssh://root@hv-1/system"
//! pool = "default"
//! template_volume = "template.img"
//! domain_template = """<domain type='kvm'>...</domain>"""
//!
//! [provision.dns]
//! server = "10.0.0.2:53"
//! key_file = "/etc/vesemir/tsig.key"
//! reverse_zone = "0.0.10.in-addr.arpa"
//!
//! [provision.ssh]
//! identity_file = "/etc/vesemir/guest_ed25519"
//! chef_server_url = "https://chef.example.com/organizations/acme"
//! ```
//!
//! The libvirt config is a table of its own (not flattened into the hypervisor's) so that an
//! unknown key or a bad value in it is refused with its exact path
//! (`provision.hypervisors[0].libvirt.timeout`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use vesemir_core::name::EnvironmentName;
use vesemir_core::provision::driver::ProvisionDriverConfig;
use vesemir_core::provision::{
    AddressRange, Catalog, DnsZone, Flavor, FlavorName, HostKeyPolicy, Hypervisor, HypervisorName,
    ProvisionConfig, RunListEntry, Size,
};
use vesemir_core::request::{check_count, check_duration, FieldError, MAX_CALL_DURATION};
use vesemir_provision::{DnsConfig, GuestSshConfig, LibvirtConfig};

/// The most times an undo is tried.
const MAX_UNDO_ATTEMPTS: u32 = 100;
/// The most hypervisors and flavors each (they are read on every create).
const MAX_ENTRIES: usize = 1000;

/// `[provision]` as written; [`check`] makes a [`ProvisionSettings`] of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSection {
    zone: String,
    environment: String,
    #[serde(default)]
    run_list: Vec<String>,
    #[serde(default)]
    host_key: HostKeyPolicy,
    #[serde(default = "defaults::ssh_timeout", with = "humantime_serde")]
    ssh_timeout: Duration,
    #[serde(default = "defaults::bootstrap_timeout", with = "humantime_serde")]
    bootstrap_timeout: Duration,
    #[serde(default = "defaults::undo_attempts")]
    undo_attempts: u32,
    #[serde(default)]
    addresses: Option<String>,
    #[serde(default)]
    first: Option<String>,
    #[serde(default)]
    last: Option<String>,
    #[serde(default)]
    login_user: Option<String>,
    #[serde(default, with = "humantime_serde")]
    call_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    poll_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    search_wait: Option<Duration>,
    #[serde(default)]
    flavors: BTreeMap<String, FlavorSection>,
    #[serde(default)]
    hypervisors: Vec<HypervisorSection>,
    dns: DnsConfig,
    ssh: GuestSshConfig,
}

/// `[provision.flavors.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorSection {
    cores: u32,
    memory_mib: u64,
    disk_gib: u64,
}

/// One `[[provision.hypervisors]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HypervisorSection {
    name: String,
    max_guests: u32,
    cores: u32,
    memory_mib: u64,
    disk_gib: u64,
    libvirt: LibvirtConfig,
}

mod defaults {
    use std::time::Duration;

    pub fn ssh_timeout() -> Duration {
        Duration::from_secs(300)
    }

    pub fn bootstrap_timeout() -> Duration {
        Duration::from_secs(1800)
    }

    pub fn undo_attempts() -> u32 {
        3
    }
}

/// `[provision]` checked: typed values, paths resolved against the configuration's directory.
#[derive(Debug, Clone)]
pub struct ProvisionSettings {
    /// The machine's settings.
    pub config: ProvisionConfig,
    /// The driver's: flavors, hypervisors, the range, call bounds.
    pub driver: ProvisionDriverConfig,
    /// Each hypervisor's libvirt config, by name.
    pub libvirt: BTreeMap<HypervisorName, LibvirtConfig>,
    /// The DNS adapter's config (its key file resolved).
    pub dns: DnsConfig,
    /// The guest SSH adapter's config (its identity file resolved).
    pub ssh: GuestSshConfig,
    /// The user "how to log in" names; `None`: the owner.
    pub login_user: Option<String>,
}

impl ProvisionSettings {
    /// One line per part, for `vesemir config check`.
    pub fn summary(&self) -> String {
        let catalog = &self.driver.catalog;
        let flavors: Vec<String> = catalog
            .flavors
            .values()
            .map(|f| {
                format!(
                    "{} ({} cores, {} MiB, {} GiB)",
                    f.name, f.size.cores, f.size.memory_mib, f.size.disk_gib
                )
            })
            .collect();
        let hypervisors: Vec<String> = catalog
            .hypervisors
            .values()
            .map(|h| {
                format!(
                    "{} (at most {} guests, {} cores, {} MiB, {} GiB)",
                    h.name, h.max_guests, h.capacity.cores, h.capacity.memory_mib, h.capacity.disk_gib
                )
            })
            .collect();
        let range = self.driver.range;
        format!(
            "provisioning: zone {}, Chef environment {}, host keys {}\n  flavors: {}\n  hypervisors: {}\n  addresses: {}-{} ({} addresses)",
            self.config.zone,
            self.config.environment,
            match self.config.host_key {
                HostKeyPolicy::Strict => "strict (checked against the console)",
                HostKeyPolicy::RecordFirst => "recorded on first use",
            },
            flavors.join(", "),
            hypervisors.join(", "),
            range.first(),
            range.last(),
            range.len()
        )
    }
}

/// Checks `section` (read from a file in `base`), resolving its paths; every problem goes to
/// `problems` as `provision.FIELD: what is wrong and the fix`. `chef` says whether `[chef]`
/// is configured (VMs are registered through its client).
pub fn check(
    section: &mut ProvisionSection,
    base: &Path,
    chef: bool,
    problems: &mut Vec<FieldError>,
) -> Option<ProvisionSettings> {
    let start = problems.len();
    if !chef {
        problems.push(FieldError::new(
            "provision",
            "needs [chef]: new VMs are registered as nodes and clients through its client; add [chef] (an admin client of the Chef server)",
        ));
    }
    let zone = named(problems, "provision.zone", DnsZone::new(&section.zone));
    let environment = EnvironmentName::new(&section.environment)
        .map_err(|e| problems.push(FieldError::new("provision.environment", e.to_string())))
        .ok();
    let run_list: Vec<RunListEntry> = section
        .run_list
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            named(problems, &format!("provision.run_list[{i}]"), RunListEntry::parse(entry))
        })
        .collect();
    let durations = [
        ("provision.ssh_timeout", Some(section.ssh_timeout)),
        ("provision.bootstrap_timeout", Some(section.bootstrap_timeout)),
        ("provision.call_timeout", section.call_timeout),
        ("provision.poll_interval", section.poll_interval),
        ("provision.search_wait", section.search_wait),
        ("provision.dns.timeout", Some(section.dns.timeout)),
        ("provision.ssh.connect_timeout", Some(section.ssh.connect_timeout)),
    ];
    for (field, value) in durations.into_iter().filter_map(|(f, v)| v.map(|v| (f, v))) {
        if value.is_zero() && field != "provision.search_wait" {
            problems.push(FieldError::new(field, "is zero: give a duration such as \"30s\""));
        } else if let Err(problem) = check_duration(field, value, MAX_CALL_DURATION) {
            problems.push(problem);
        }
    }
    problems
        .extend(check_count("provision.undo_attempts", section.undo_attempts, 1, MAX_UNDO_ATTEMPTS).err());
    let range = address_range(section, problems);
    if let Some(user) = &section.login_user {
        if !is_user_name(user) {
            problems.push(FieldError::new(
                "provision.login_user",
                format!("{user:?} is not a user name: use lowercase letters, digits, '_' or '-', starting with a letter or '_'"),
            ));
        }
    }
    let flavors = flavors(section, problems);
    let (hypervisors, libvirt) = hypervisors(section, problems);
    section.dns.key_file = crate::config::resolve(base, &section.dns.key_file);
    crate::config::check_private_key(problems, "provision.dns.key_file", &section.dns.key_file);
    section.ssh.identity_file = crate::config::resolve(base, &section.ssh.identity_file);
    crate::config::check_private_key(problems, "provision.ssh.identity_file", &section.ssh.identity_file);
    if !(section.ssh.chef_server_url.starts_with("https://")
        || section.ssh.chef_server_url.starts_with("http://"))
    {
        problems.push(FieldError::new(
            "provision.ssh.chef_server_url",
            format!(
                "{:?} is not an http(s) URL: give the Chef server's URL as the new VMs reach it",
                section.ssh.chef_server_url
            ),
        ));
    }
    if problems.len() > start {
        return None;
    }
    let (zone, environment, range) = (zone?, environment?, range?);
    let mut driver = ProvisionDriverConfig::new(Catalog { flavors, hypervisors }, range);
    if let Some(timeout) = section.call_timeout {
        driver.call_timeout = timeout;
    }
    if let Some(interval) = section.poll_interval {
        driver.poll_interval = interval;
    }
    if let Some(wait) = section.search_wait {
        driver.search_wait = wait;
    }
    Some(ProvisionSettings {
        config: ProvisionConfig {
            zone,
            environment,
            run_list,
            host_key: section.host_key,
            ssh_timeout: section.ssh_timeout,
            bootstrap_timeout: section.bootstrap_timeout,
            undo_attempts: section.undo_attempts,
        },
        driver,
        libvirt,
        dns: section.dns.clone(),
        ssh: section.ssh.clone(),
        login_user: section.login_user.clone(),
    })
}

/// The value, or its problem recorded under `field`.
fn named<T>(
    problems: &mut Vec<FieldError>,
    field: &str,
    value: Result<T, vesemir_core::provision::ProvisionNameError>,
) -> Option<T> {
    value.map_err(|e| problems.push(FieldError::new(field, e.to_string()))).ok()
}

/// A POSIX-ish login name.
fn is_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `addresses = "FIRST-LAST"`, or `first` and `last`: exactly one of the two forms.
fn address_range(section: &ProvisionSection, problems: &mut Vec<FieldError>) -> Option<AddressRange> {
    const FIX: &str =
        "write addresses = \"10.0.0.10-10.0.0.200\", or first = \"10.0.0.10\" and last = \"10.0.0.200\"";
    let mut address = |field: &str, text: &str| {
        text.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| {
                problems.push(FieldError::new(field, format!("{text:?} is not an IPv4 address: {FIX}")))
            })
            .ok()
    };
    let (first, last, field) = match (&section.addresses, &section.first, &section.last) {
        (Some(range), None, None) => {
            let Some((first, last)) = range.split_once('-') else {
                problems
                    .push(FieldError::new("provision.addresses", format!("{range:?} is not a range: {FIX}")));
                return None;
            };
            (
                address("provision.addresses", first),
                address("provision.addresses", last),
                "provision.addresses",
            )
        }
        (None, Some(first), Some(last)) => {
            (address("provision.first", first), address("provision.last", last), "provision.first")
        }
        (None, None, None) => {
            problems.push(FieldError::new("provision.addresses", format!("is missing: {FIX}")));
            return None;
        }
        (Some(_), _, _) => {
            problems.push(FieldError::new(
                "provision.addresses",
                format!("is given with first/last: {FIX}, not both"),
            ));
            return None;
        }
        (None, _, _) => {
            problems.push(FieldError::new("provision.first", format!("first and last go together: {FIX}")));
            return None;
        }
    };
    let (first, last) = (first?, last?);
    AddressRange::new(first, last)
        .map_err(|e| problems.push(FieldError::new(field, format!("{e}: swap them"))))
        .ok()
}

fn flavors(section: &ProvisionSection, problems: &mut Vec<FieldError>) -> BTreeMap<FlavorName, Flavor> {
    if section.flavors.is_empty() {
        problems.push(FieldError::new(
            "provision.flavors",
            "is empty: add at least one, e.g. [provision.flavors.small] cores = 2, memory_mib = 5120, disk_gib = 40",
        ));
    }
    if section.flavors.len() > MAX_ENTRIES {
        problems.push(FieldError::new("provision.flavors", format!("has more than {MAX_ENTRIES} flavors")));
    }
    let mut flavors = BTreeMap::new();
    for (name, flavor) in &section.flavors {
        let field = format!("provision.flavors.{name}");
        let Some(flavor_name) = named(problems, &field, FlavorName::new(name)) else { continue };
        let size = Size { cores: flavor.cores, memory_mib: flavor.memory_mib, disk_gib: flavor.disk_gib };
        if !sizes_positive(problems, &field, size) {
            continue;
        }
        flavors.insert(flavor_name.clone(), Flavor { name: flavor_name, size });
    }
    flavors
}

/// Whether each dimension is at least 1 (else a problem per dimension).
fn sizes_positive(problems: &mut Vec<FieldError>, field: &str, size: Size) -> bool {
    let mut ok = true;
    for (key, zero) in
        [("cores", size.cores == 0), ("memory_mib", size.memory_mib == 0), ("disk_gib", size.disk_gib == 0)]
    {
        if zero {
            problems.push(FieldError::new(format!("{field}.{key}"), "is 0: give at least 1"));
            ok = false;
        }
    }
    ok
}

type Hypervisors = (BTreeMap<HypervisorName, Hypervisor>, BTreeMap<HypervisorName, LibvirtConfig>);

fn hypervisors(section: &ProvisionSection, problems: &mut Vec<FieldError>) -> Hypervisors {
    if section.hypervisors.is_empty() {
        problems.push(FieldError::new(
            "provision.hypervisors",
            "is empty: add at least one [[provision.hypervisors]] with name, max_guests, cores, memory_mib, disk_gib and a [provision.hypervisors.libvirt] table",
        ));
    }
    if section.hypervisors.len() > MAX_ENTRIES {
        problems.push(FieldError::new(
            "provision.hypervisors",
            format!("has more than {MAX_ENTRIES} hypervisors"),
        ));
    }
    let mut seen = BTreeSet::new();
    let (mut catalog, mut libvirt) = (BTreeMap::new(), BTreeMap::new());
    for (i, hypervisor) in section.hypervisors.iter().enumerate() {
        let field = format!("provision.hypervisors[{i}]");
        let name = named(problems, &format!("{field}.name"), HypervisorName::new(&hypervisor.name));
        if let Some(name) = &name {
            if !seen.insert(name.clone()) {
                problems.push(FieldError::new(
                    format!("{field}.name"),
                    format!("{name:?} is given twice: each hypervisor needs a name of its own"),
                ));
            }
        }
        let capacity = Size {
            cores: hypervisor.cores,
            memory_mib: hypervisor.memory_mib,
            disk_gib: hypervisor.disk_gib,
        };
        let sized = sizes_positive(problems, &field, capacity);
        let config = &hypervisor.libvirt;
        for (key, value) in
            [("uri", &config.uri), ("pool", &config.pool), ("template_volume", &config.template_volume)]
        {
            if value.trim().is_empty() {
                problems.push(FieldError::new(format!("{field}.libvirt.{key}"), "is empty"));
            }
        }
        if !config.domain_template.contains("{name}") || !config.domain_template.contains("{disk}") {
            problems.push(FieldError::new(
                format!("{field}.libvirt.domain_template"),
                "needs the placeholders {name} and {disk} (also {memory_mib}, {cores}, {address}): the domain XML for each VM",
            ));
        }
        if let Some(console) = &config.console_log {
            if !console.contains("{name}") {
                problems.push(FieldError::new(
                    format!("{field}.libvirt.console_log"),
                    "needs the placeholder {name}: one console log per VM",
                ));
            }
        }
        if config.timeout.is_zero() {
            problems.push(FieldError::new(
                format!("{field}.libvirt.timeout"),
                "is zero: give a duration such as \"60s\"",
            ));
        } else if let Err(problem) =
            check_duration(&format!("{field}.libvirt.timeout"), config.timeout, MAX_CALL_DURATION)
        {
            problems.push(problem);
        }
        if let (Some(name), true) = (name, sized) {
            catalog.insert(
                name.clone(),
                Hypervisor { name: name.clone(), max_guests: hypervisor.max_guests, capacity },
            );
            libvirt.insert(name, config.clone());
        }
    }
    (catalog, libvirt)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigErrors};

    /// A key file readable by its owner only (a test run as root gives it to `nobody`).
    fn write_key(path: &Path) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::write(path, "key").expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if std::fs::metadata(path).expect("stat").uid() == 0 {
            std::os::unix::fs::chown(path, Some(65534), None).expect("chown to nobody");
        }
    }

    const BASE: &str = r#"
[ssh]
user = "deploy"
key = "id_ed25519"

[chef]
server_url = "https://chef.example"
client_name = "vesemir"
client_key_path = "chef.pem"
"#;

    const PROVISION: &str = r#"
[provision]
zone = "dev.example.com"
environment = "production"
run_list = ["role[base]", "recipe[dev::vm]"]
ssh_timeout = "2m"
undo_attempts = 2
addresses = "10.0.0.10-10.0.0.200"
login_user = "dev"
search_wait = "15s"

[provision.flavors.small]
cores = 2
memory_mib = 5120
disk_gib = 40

[[provision.hypervisors]]
name = "hv-1"
max_guests = 11
cores = 22
memory_mib = 56320
disk_gib = 440
[provision.hypervisors.libvirt]
uri = "qemu+ssh://root@hv-1/system"
pool = "default"
template_volume = "template.img"
domain_template = "<domain><name>{name}</name><disk>{disk}</disk></domain>"

[provision.dns]
server = "10.0.0.2:53"
key_file = "tsig.key"
reverse_zone = "0.0.10.in-addr.arpa"

[provision.ssh]
identity_file = "guest_key"
chef_server_url = "https://chef.example"
"#;

    fn load(text: &str) -> (tempfile::TempDir, Result<Config, ConfigErrors>) {
        let dir = tempfile::tempdir().expect("tempdir");
        for key in ["id_ed25519", "chef.pem", "tsig.key", "guest_key"] {
            write_key(&dir.path().join(key));
        }
        let path = dir.path().join("vesemir.toml");
        std::fs::write(&path, text).expect("write");
        let config = Config::load(&path, &[]);
        (dir, config)
    }

    fn problems(text: &str) -> Vec<String> {
        let (_dir, config) = load(text);
        let errors = config.expect_err("problems");
        errors.errors.errors().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_good_section_gives_the_machine_the_driver_and_the_adapters_their_configs() {
        let (dir, config) = load(&format!("{BASE}{PROVISION}"));
        let config = config.expect("valid");
        let provision = config.provision.expect("[provision]");
        assert_eq!(provision.config.zone.as_str(), "dev.example.com");
        assert_eq!(provision.config.environment.as_str(), "production");
        assert_eq!(provision.config.run_list.len(), 2);
        assert_eq!(provision.config.ssh_timeout, std::time::Duration::from_secs(120));
        assert_eq!(provision.config.bootstrap_timeout, std::time::Duration::from_secs(1800), "the default");
        assert_eq!(provision.config.undo_attempts, 2);
        assert_eq!(provision.driver.range.len(), 191);
        assert_eq!(provision.driver.search_wait, std::time::Duration::from_secs(15));
        let hv = provision.driver.catalog.hypervisors.values().next().expect("a hypervisor");
        assert_eq!((hv.name.as_str(), hv.max_guests, hv.capacity.cores), ("hv-1", 11, 22));
        assert_eq!(provision.libvirt.len(), 1);
        assert_eq!(provision.dns.key_file, dir.path().join("tsig.key"), "resolved against the file");
        assert_eq!(provision.ssh.identity_file, dir.path().join("guest_key"));
        assert_eq!(provision.ssh.user, "root", "the adapter's default");
        assert_eq!(provision.login_user.as_deref(), Some("dev"));
        let summary = provision.summary();
        assert!(summary.contains("small (2 cores, 5120 MiB, 40 GiB)"), "{summary}");
        assert!(summary.contains("hv-1 (at most 11 guests, 22 cores, 56320 MiB, 440 GiB)"), "{summary}");
        assert!(summary.contains("10.0.0.10-10.0.0.200 (191 addresses)"), "{summary}");

        let first_last = PROVISION
            .replace("addresses = \"10.0.0.10-10.0.0.200\"", "first = \"10.0.0.10\"\nlast = \"10.0.0.20\"");
        let (_dir, config) = load(&format!("{BASE}{first_last}"));
        assert_eq!(config.expect("valid").provision.expect("[provision]").driver.range.len(), 11);
    }

    #[test]
    fn every_bad_value_is_named_by_its_path_with_the_fix() {
        let bad = PROVISION
            .replace("zone = \"dev.example.com\"", "zone = \"Dev..example\"")
            .replace("\"recipe[dev::vm]\"", "\"cookbook[x]\"")
            .replace("undo_attempts = 2", "undo_attempts = 0")
            .replace("10.0.0.10-10.0.0.200", "10.0.0.200-10.0.0.10")
            .replace("disk_gib = 40", "disk_gib = 0")
            .replace("name = \"hv-1\"", "name = \"HV 1\"")
            .replace("uri = \"qemu+ssh://root@hv-1/system\"", "uri = \"qemu:///system\"\ncolour = \"blue\"")
            .replace("<disk>{disk}</disk>", "")
            .replace("chef_server_url = \"https://chef.example\"", "chef_server_url = \"chef.example\"")
            .replace("key_file = \"tsig.key\"", "key_file = \"missing.key\"");
        let lines = problems(&format!("{BASE}{bad}"));
        let fields: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap_or_default()).collect();
        assert_eq!(
            fields,
            [
                "provision.hypervisors[0].libvirt.colour",
                "provision.zone",
                "provision.run_list[1]",
                "provision.undo_attempts",
                "provision.addresses",
                "provision.flavors.small.disk_gib",
                "provision.hypervisors[0].name",
                "provision.hypervisors[0].libvirt.domain_template",
                "provision.dns.key_file",
                "provision.ssh.chef_server_url",
            ],
            "{lines:#?}"
        );
        let text = lines.join("\n");
        for says in [
            "use DNS labels",
            "write role[NAME] or recipe[NAME]",
            "swap them",
            "give at least 1",
            "{disk}",
            "cannot read",
        ] {
            assert!(text.contains(says), "{says}: {text}");
        }
    }

    #[test]
    fn missing_parts_are_named_chef_first() {
        let no_chef = BASE.split("[chef]").next().unwrap_or_default();
        let empty = PROVISION
            .replace("addresses = \"10.0.0.10-10.0.0.200\"\n", "")
            .split("[provision.flavors.small]")
            .next()
            .unwrap_or_default()
            .to_owned()
            + "[provision.dns]\nserver = \"10.0.0.2:53\"\nkey_file = \"tsig.key\"\nreverse_zone = \"0.0.10.in-addr.arpa\"\n[provision.ssh]\nidentity_file = \"guest_key\"\nchef_server_url = \"https://chef.example\"\n";
        let lines = problems(&format!("{no_chef}{empty}"));
        let text = lines.join("\n");
        for says in [
            "provision: needs [chef]",
            "provision.addresses: is missing: write addresses =",
            "provision.flavors: is empty",
            "provision.hypervisors: is empty",
        ] {
            assert!(text.contains(says), "{says}: {text}");
        }
        let both = PROVISION.replace("login_user = \"dev\"", "first = \"10.0.0.1\"\nlast = \"10.0.0.2\"");
        let text = problems(&format!("{BASE}{both}")).join("\n");
        assert!(text.contains("provision.addresses: is given with first/last"), "{text}");
        let ssh_missing = PROVISION.split("[provision.ssh]").next().unwrap_or_default().to_owned();
        let text = problems(&format!("{BASE}{ssh_missing}")).join("\n");
        assert!(text.contains("provision: missing field `ssh`"), "{text}");
    }
}
