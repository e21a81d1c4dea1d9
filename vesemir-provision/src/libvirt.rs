//! The `HypervisorPort` through `virsh -c URI` (one adapter per hypervisor; the URI may be local
//! or remote, e.g. `qemu+ssh://root@hv-03/system`). Disks are volumes of a storage pool, cloned
//! from the template volume kept there and grown to the flavor's size; domains come from the
//! operator's XML template; the guests' sizes are read back from libvirt for placement.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vesemir_core::provision::{Guest, HypervisorPort, Size, SshHostKey, VmName};
use vesemir_core::PortError;

use crate::command::{run, ToolOutput};

/// How to reach one hypervisor. Its own serde form (unknown keys refused, durations as `"10s"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// The libvirt URI (`virsh -c`).
    pub uri: String,
    /// The storage pool holding the template and the VMs' disks.
    pub pool: String,
    /// The template volume's name in the pool.
    pub template_volume: String,
    /// The domain XML with placeholders: `{name}`, `{memory_mib}`, `{cores}`, `{disk}` (the
    /// disk volume's path) and `{address}` (the VM's IPv4 address).
    pub domain_template: String,
    /// Where a guest's serial console is logged, with `{name}`, when it is readable from here
    /// (the host key is read from it); `None` when not.
    #[serde(default)]
    pub console_log: Option<String>,
    /// How long one virsh call may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

impl LibvirtConfig {
    /// A config with the default timeout and no console log.
    pub fn new(uri: String, pool: String, template_volume: String, domain_template: String) -> Self {
        Self { uri, pool, template_volume, domain_template, console_log: None, timeout: default_timeout() }
    }
}

/// The `HypervisorPort` through virsh. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct VirshHypervisor {
    config: LibvirtConfig,
}

/// The first host key a console shows between cloud-init's `-----BEGIN SSH HOST KEY KEYS-----`
/// and `-----END SSH HOST KEY KEYS-----` lines.
pub fn console_host_key(console: &str) -> Option<SshHostKey> {
    const BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
    const END: &str = "-----END SSH HOST KEY KEYS-----";
    let after = &console[console.find(BEGIN)? + BEGIN.len()..];
    let block = &after[..after.find(END)?];
    block.lines().find_map(|line| SshHostKey::parse(line.trim()).ok())
}

fn volume(vm: &VmName) -> String {
    format!("{vm}.img")
}

fn is_not_found(output: &ToolOutput) -> bool {
    let text = output.text().to_ascii_lowercase();
    ["domain not found", "failed to get domain", "storage volume not found", "no storage vol", "not running"]
        .iter()
        .any(|pattern| text.contains(pattern))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

impl VirshHypervisor {
    /// An adapter for `config`.
    pub fn new(config: LibvirtConfig) -> Self {
        Self { config }
    }

    async fn virsh_output(&self, args: &[&str]) -> Result<ToolOutput, PortError> {
        let mut all = vec!["-q", "-c", self.config.uri.as_str()];
        all.extend_from_slice(args);
        run("virsh", &all, None, self.config.timeout).await
    }

    /// Runs virsh; a failure is rejected with what virsh said.
    async fn virsh(&self, args: &[&str]) -> Result<String, PortError> {
        let output = self.virsh_output(args).await?;
        if output.success {
            Ok(output.stdout)
        } else {
            Err(self.error(args, &output))
        }
    }

    /// Runs virsh; "not found" is no error (undos run again).
    async fn virsh_idempotent(&self, args: &[&str]) -> Result<(), PortError> {
        let output = self.virsh_output(args).await?;
        if output.success || is_not_found(&output) {
            Ok(())
        } else {
            Err(self.error(args, &output))
        }
    }

    fn error(&self, args: &[&str], output: &ToolOutput) -> PortError {
        let text = output.text();
        let target = format!("libvirt {}", self.config.uri);
        if text.contains("Failed to connect socket") || text.contains("failed to connect to the hypervisor") {
            PortError::unreachable(target, text)
        } else {
            PortError::rejected(
                target,
                format!("virsh {}: {text}", args.first().copied().unwrap_or_default()),
            )
        }
    }

    async fn size_of(&self, name: &str) -> Result<Size, PortError> {
        let info = self.virsh(&["dominfo", name]).await?;
        let field = |key: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::trim)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let cores = field("CPU(s):").unwrap_or(0);
        let memory_kib = field("Max memory:").unwrap_or(0);
        let blocks = self.virsh(&["domblkinfo", name, "--all"]).await?;
        let disk_bytes: u64 =
            blocks.lines().filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok()).sum();
        Ok(Size {
            cores: u32::try_from(cores).unwrap_or(u32::MAX),
            memory_mib: memory_kib / 1024,
            disk_gib: disk_bytes.div_ceil(1 << 30),
        })
    }
}

#[async_trait]
impl HypervisorPort for VirshHypervisor {
    async fn guests(&self) -> Result<Vec<Guest>, PortError> {
        let names = self.virsh(&["list", "--all", "--name"]).await?;
        let mut guests = Vec::new();
        for name in names.lines().map(str::trim).filter(|name| !name.is_empty()) {
            guests.push(Guest { name: name.to_owned(), size: self.size_of(name).await? });
        }
        Ok(guests)
    }

    async fn create_disk(&self, vm: &VmName, size: Size) -> Result<(), PortError> {
        let pool = self.config.pool.as_str();
        let name = volume(vm);
        self.virsh(&["vol-clone", "--pool", pool, &self.config.template_volume, &name]).await?;
        let capacity = format!("{}G", size.disk_gib);
        if let Err(error) = self.virsh(&["vol-resize", "--pool", pool, &name, &capacity]).await {
            let _ = self.virsh_idempotent(&["vol-delete", "--pool", pool, &name]).await;
            return Err(error);
        }
        Ok(())
    }

    async fn delete_disk(&self, vm: &VmName) -> Result<(), PortError> {
        self.virsh_idempotent(&["vol-delete", "--pool", &self.config.pool, &volume(vm)]).await
    }

    async fn start_domain(&self, vm: &VmName, size: Size, address: Ipv4Addr) -> Result<(), PortError> {
        let disk = self.virsh(&["vol-path", "--pool", &self.config.pool, &volume(vm)]).await?;
        let xml = self
            .config
            .domain_template
            .replace("{name}", vm.as_str())
            .replace("{memory_mib}", &size.memory_mib.to_string())
            .replace("{cores}", &size.cores.to_string())
            .replace("{disk}", &xml_escape(disk.trim()))
            .replace("{address}", &address.to_string());
        let file =
            tempfile::Builder::new().prefix("vesemir-domain-").suffix(".xml").tempfile().map_err(|e| {
                PortError::Adapter {
                    adapter: "libvirt",
                    source: format!("cannot write the domain XML: {e}").into(),
                }
            })?;
        std::fs::write(file.path(), xml).map_err(|e| PortError::Adapter {
            adapter: "libvirt",
            source: format!("cannot write the domain XML: {e}").into(),
        })?;
        let path = file.path().display().to_string();
        self.virsh(&["define", &path]).await?;
        if let Err(error) = self.virsh(&["start", vm.as_str()]).await {
            let _ = self.virsh_idempotent(&["undefine", vm.as_str()]).await;
            return Err(error);
        }
        Ok(())
    }

    async fn destroy_domain(&self, vm: &VmName) -> Result<(), PortError> {
        self.virsh_idempotent(&["destroy", vm.as_str()]).await?;
        self.virsh_idempotent(&["undefine", vm.as_str()]).await
    }

    async fn console_host_key(&self, vm: &VmName) -> Result<Option<SshHostKey>, PortError> {
        let Some(pattern) = &self.config.console_log else { return Ok(None) };
        let path = PathBuf::from(pattern.replace("{name}", vm.as_str()));
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(console_host_key(&String::from_utf8_lossy(&bytes))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(PortError::Adapter {
                adapter: "libvirt",
                source: format!("cannot read the console log {}: {error}", path.display()).into(),
            }),
        }
    }
}
