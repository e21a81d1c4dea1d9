//! A libvirt lab for tests: `virtlogd` and `libvirtd` started by the test in session mode (its
//! own sockets, config and state in a temp dir; as `nobody` when the test runs as root, since a
//! privileged libvirtd would share /run/libvirt with any other), a `dir` storage pool holding a
//! disk template, and tiny guests: `<domain type='qemu'>` (TCG) booted directly from Debian's
//! cloud kernel with an initramfs made here (busybox, dropbear, the virtio network modules),
//! reachable by user-mode networking on their own 127.x address. Each guest prints its SSH host
//! key on its serial console (a file), so the key can be checked rather than trusted on first
//! use. Dropping the lab destroys its guests and stops what it started, by pid.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{find_binary, free_port, require_binary, wait_for_path, ServerProcess};

/// The Debian package that has `libvirtd` and `virtlogd`.
pub const LIBVIRT_DAEMON_PACKAGE: &str = "libvirt-daemon";
/// The Debian package that has `virsh`.
pub const LIBVIRT_CLIENTS_PACKAGE: &str = "libvirt-clients";
/// Where the guest kernel is looked for unless `VESEMIR_GUEST_KERNEL_DIR` says otherwise;
/// `.ci/install-test-servers` fills it from `linux-image-cloud-amd64`.
pub const GUEST_KERNEL_DIR: &str = "/var/cache/vesemir/guest-kernel";
/// The storage pool of the lab: the disk template and guests' disks.
pub const POOL: &str = "vesemir";
/// The disk template's volume name in [`POOL`].
pub const TEMPLATE_VOLUME: &str = "template.img";
/// The lines a guest prints its host key between on its console, as cloud-init does.
pub const HOST_KEY_BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
/// See [`HOST_KEY_BEGIN`].
pub const HOST_KEY_END: &str = "-----END SSH HOST KEY KEYS-----";

/// The guest's `/bin/chef-client`: a busybox script standing in for chef-client (the guest has
/// no Ruby and no Chef). It checks what a first chef-client run reads, the client key and
/// `client.rb` in `/etc/chef` and the `-j` JSON, says what it found (node name, environment,
/// run list) and exits 0, or 1 naming what is missing. What it proves is the bootstrap's
/// transport: the host key checked, the files written, the output streamed, the exit status.
pub const CHEF_CLIENT_STAND_IN: &str = r#"#!/bin/sh
# Stand-in for chef-client in Vesemir's test guest: no Chef run happens here.
json=
while [ $# -gt 0 ]; do
  case "$1" in -j) json="$2"; shift ;; esac
  shift
done
conf=/etc/chef/client.rb
[ -r "$conf" ] || { echo "stand-in chef-client: no $conf" >&2; exit 1; }
key=$(sed -n 's/^client_key "\(.*\)"$/\1/p' "$conf")
grep -q 'BEGIN .*PRIVATE KEY' "$key" 2>/dev/null || { echo "stand-in chef-client: no client key at $key" >&2; exit 1; }
mode=$(stat -c %a "$key")
[ "$mode" = 600 ] || { echo "stand-in chef-client: $key has mode $mode, not 600" >&2; exit 1; }
echo "stand-in chef-client (no Chef in this guest): first run"
echo "node_name $(sed -n 's/^node_name "\(.*\)"$/\1/p' "$conf")"
echo "environment $(sed -n 's/^environment "\(.*\)"$/\1/p' "$conf")"
echo "chef_server_url $(sed -n 's/^chef_server_url "\(.*\)"$/\1/p' "$conf")"
[ -n "$json" ] && echo "first boot $(cat "$json")"
echo "stand-in chef-client: done"
"#;

/// The modules the guest loads, in order (virtio-net is a module in Debian's cloud kernel).
const MODULES: [&str; 8] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The uid and gid the daemons run as when the test runs as root (`nobody`/`nogroup`).
const UNPRIVILEGED: u32 = 65534;

/// A running libvirt lab. See the [module documentation](self).
#[derive(Debug)]
pub struct LibvirtLab {
    // Field order is drop order after `Drop::drop`: libvirtd before virtlogd, the dir last.
    libvirtd: ServerProcess,
    virtlogd: ServerProcess,
    dir: tempfile::TempDir,
    uri: String,
    ssh_port: u16,
}

impl LibvirtLab {
    /// Starts virtlogd and libvirtd, defines the storage pool with a 64 MiB disk template, and
    /// builds the guest's kernel, initramfs and SSH client key.
    pub fn start() -> Self {
        let libvirtd = require_binary("libvirtd", LIBVIRT_DAEMON_PACKAGE);
        let virtlogd = require_binary("virtlogd", LIBVIRT_DAEMON_PACKAGE);
        require_binary("virsh", LIBVIRT_CLIENTS_PACKAGE);
        require_binary("qemu-system-x86_64", "qemu-system-x86");
        let dir = ServerProcess::temp_dir("libvirt");
        let root = dir.path().to_path_buf();
        for sub in ["run", "config", "cache", "data", "images", "consoles", "guest"] {
            mkdir(&root.join(sub));
        }
        build_guest(&root);
        make_template(&root.join("images").join(TEMPLATE_VOLUME));
        let as_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        if as_root {
            chown_tree(&root);
        }
        let daemon = |binary: &Path, name: &str| {
            let mut command = Command::new(binary);
            command
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", &root)
                .env("XDG_RUNTIME_DIR", root.join("run"))
                .env("XDG_CONFIG_HOME", root.join("config"))
                .env("XDG_CACHE_HOME", root.join("cache"))
                .env("XDG_DATA_HOME", root.join("data"));
            if as_root {
                // std drops the supplementary groups too when it sets the uid as root.
                command.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
            }
            let logs = tempfile::Builder::new()
                .prefix(&format!("{name}-"))
                .tempdir_in(&root)
                .unwrap_or_else(|e| panic!("cannot make {name}'s log dir: {e}"));
            ServerProcess::start(name, command, logs)
        };
        let mut virtlogd = daemon(&virtlogd, "virtlogd");
        wait_for_path(&root.join("run/libvirt/virtlogd-sock"), Duration::from_secs(20), &mut virtlogd);
        let mut libvirtd = daemon(&libvirtd, "libvirtd");
        let socket = root.join("run/libvirt/libvirt-sock");
        wait_for_path(&socket, Duration::from_secs(30), &mut libvirtd);
        let uri = format!("qemu+unix:///session?socket={}", socket.display());
        let lab = Self { libvirtd, virtlogd, dir, uri, ssh_port: free_port() };
        let images = lab.dir.path().join("images");
        lab.virsh(&["pool-define-as", POOL, "dir", "--target", &images.display().to_string()]);
        lab.virsh(&["pool-start", POOL]);
        lab.virsh(&["pool-refresh", POOL]);
        lab
    }

    /// The URI to reach this libvirtd with (`virsh -c URI`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The port every guest's SSH answers on, at its own address (user-mode networking's
    /// `hostfwd`; an unprivileged QEMU cannot bind port 22).
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// The private key the guests accept for `root`.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The file a guest's serial console is written to.
    pub fn console_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("consoles").join(format!("{name}.log"))
    }

    /// The directory of the storage pool.
    pub fn images_dir(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    /// A domain XML template for guests of this lab, with the placeholders the libvirt adapter
    /// fills in: `{name}`, `{memory_mib}`, `{cores}`, `{disk}` (the disk's path) and
    /// `{address}` (the guest's loopback address, which stands for its allocated IP).
    pub fn domain_template(&self) -> String {
        let dir = self.dir.path().display();
        format!(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n\
             <name>{{name}}</name>\n<memory unit='MiB'>{{memory_mib}}</memory>\n<vcpu>{{cores}}</vcpu>\n\
             <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{dir}/guest/vmlinuz</kernel>\
             <initrd>{dir}/guest/initrd.cpio</initrd><cmdline>console=ttyS0 quiet panic=-1</cmdline></os>\n\
             <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>\n\
             <devices>\n\
             <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{{disk}}'/><target dev='vda' bus='virtio'/></disk>\n\
             <serial type='file'><source path='{dir}/consoles/{{name}}.log'/><target port='0'/></serial>\n\
             <memballoon model='none'/>\n</devices>\n\
             <qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='user,id=n0,hostfwd=tcp:{{address}}:{port}-:22'/>\
             <qemu:arg value='-device'/><qemu:arg value='virtio-net-pci,netdev=n0,romfile=,addr=0x10'/></qemu:commandline>\n\
             </domain>\n",
            port = self.ssh_port
        )
    }

    /// Runs `virsh -c URI args...`, panicking with its output when it fails; returns stdout.
    pub fn virsh(&self, args: &[&str]) -> String {
        let output = Command::new("virsh")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run virsh: {e}"));
        if !output.status.success() {
            panic!(
                "virsh {args:?} failed: {}{}\nlibvirtd:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.libvirtd.log()
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until a guest printed its host key on its console; returns the key line
    /// (`ssh-ed25519 AAAA...`).
    pub fn wait_for_console_key(&self, name: &str, timeout: Duration) -> String {
        let path = self.console_path(name);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(key) = console_key(&std::fs::read_to_string(&path).unwrap_or_default()) {
                return key;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "guest {name} printed no host key within {timeout:?}; console:\n{}",
            std::fs::read_to_string(&path).unwrap_or_default()
        )
    }

    /// What libvirtd logged so far.
    pub fn log(&self) -> String {
        self.libvirtd.log()
    }

    /// The SSH address of a guest at `address`.
    pub fn ssh_address(&self, address: Ipv4Addr) -> SocketAddr {
        SocketAddr::from((address, self.ssh_port))
    }
}

/// The first host key a console shows between [`HOST_KEY_BEGIN`] and [`HOST_KEY_END`].
pub fn console_key(console: &str) -> Option<String> {
    let after = &console[console.find(HOST_KEY_BEGIN)? + HOST_KEY_BEGIN.len()..];
    let block = &after[..after.find(HOST_KEY_END)?];
    block.lines().map(str::trim).find(|line| line.starts_with("ssh-")).map(str::to_owned)
}

impl Drop for LibvirtLab {
    fn drop(&mut self) {
        // Guests first: every domain still running is destroyed through libvirtd...
        let run = |args: &[&str]| {
            Command::new("virsh")
                .arg("-c")
                .arg(&self.uri)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
        };
        if let Ok(output) = run(&["list", "--name"]) {
            for name in String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.trim().is_empty()) {
                let _ = run(&["destroy", name.trim()]);
            }
        }
        // ...and any QEMU it started that is still there is killed by the pid it recorded.
        let pids = self.dir.path().join("run/libvirt/qemu/run");
        if let Ok(entries) = std::fs::read_dir(&pids) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "pid")
                    && path.file_name().is_some_and(|n| n != "driver.pid")
                {
                    if let Ok(pid) = std::fs::read_to_string(&path) {
                        let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
                    }
                }
            }
        }
        self.libvirtd.stop();
        self.virtlogd.stop();
    }
}

fn mkdir(path: &Path) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

fn chown_tree(path: &Path) {
    let _ = std::os::unix::fs::chown(path, Some(UNPRIVILEGED), Some(UNPRIVILEGED));
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            chown_tree(&entry.path());
        }
    }
}

fn make_template(path: &Path) {
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    file.set_len(64 << 20).unwrap_or_else(|e| panic!("cannot size {}: {e}", path.display()));
}

/// The guest: the kernel and modules from [`GUEST_KERNEL_DIR`], busybox, dropbear with its
/// libraries, root's authorized key, and an init that loads the modules, configures the network,
/// makes a host key, prints it on the console and starts dropbear.
fn build_guest(root: &Path) {
    let kernel_dir = std::env::var_os("VESEMIR_GUEST_KERNEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| GUEST_KERNEL_DIR.into());
    if !kernel_dir.join("vmlinuz").exists() {
        panic!(
            "no guest kernel in {}: run .ci/install-test-servers (it downloads linux-image-cloud-amd64 \
             with apt-get download and keeps vmlinuz and the virtio modules), or set VESEMIR_GUEST_KERNEL_DIR",
            kernel_dir.display()
        );
    }
    let busybox = require_binary("busybox", "busybox-static");
    let dropbear = require_binary("dropbear", "dropbear-bin");
    let dropbearkey = require_binary("dropbearkey", "dropbear-bin");
    let cpio = require_binary("cpio", "cpio");
    let keygen = require_binary("ssh-keygen", "openssh-client");
    let guest = root.join("guest");
    let initrd = root.join("initrd-root");
    for sub in ["bin", "etc/dropbear", "proc", "sys", "dev", "tmp", "lib/modules", "root/.ssh"] {
        mkdir(&initrd.join(sub));
    }
    copy(&kernel_dir.join("vmlinuz"), &guest.join("vmlinuz"));
    for module in MODULES {
        copy(&kernel_dir.join(format!("{module}.ko")), &initrd.join(format!("lib/modules/{module}.ko")));
    }
    copy(&busybox, &initrd.join("bin/busybox"));
    copy(&dropbear, &initrd.join("bin/dropbear"));
    copy(&dropbearkey, &initrd.join("bin/dropbearkey"));
    for library in libraries(&[&dropbear, &dropbearkey]) {
        let target = initrd.join(library.strip_prefix("/").unwrap_or(&library));
        if let Some(parent) = target.parent() {
            mkdir(parent);
        }
        copy(&library, &target);
    }
    let status = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vesemir-lab", "-f"])
        .arg(root.join("id_ed25519"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}"));
    assert!(status.success(), "ssh-keygen failed");
    copy(&root.join("id_ed25519.pub"), &initrd.join("root/.ssh/authorized_keys"));
    write(&initrd.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    write(&initrd.join("etc/group"), "root:x:0:\n");
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\n\
         mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n\
         mkdir -p /dev/pts; mount -t devpts devpts /dev/pts\n\
         for m in {modules}; do insmod /lib/modules/$m.ko 2>/dev/ttyS0; done\n\
         for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done\n\
         ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0\n\
         dropbearkey -t ed25519 -f /etc/dropbear/key >/dev/null 2>&1\n\
         {{ echo {HOST_KEY_BEGIN}; dropbearkey -y -f /etc/dropbear/key | grep ^ssh-; echo {HOST_KEY_END}; }} > /dev/ttyS0\n\
         dropbear -R -E -r /etc/dropbear/key -p 22 2>/dev/ttyS0\n\
         while true; do sleep 3600; done\n",
        modules = MODULES.join(" ")
    );
    write(&initrd.join("bin/chef-client"), CHEF_CLIENT_STAND_IN);
    set_executable(&initrd.join("bin/chef-client"));
    write(&initrd.join("init"), &init);
    set_executable(&initrd.join("init"));
    // cpio -H newc of the tree, uncompressed (the kernel takes it as is).
    let list = Command::new(find_binary("find").unwrap_or_else(|| "find".into()))
        .arg(".")
        .current_dir(&initrd)
        .output()
        .unwrap_or_else(|e| panic!("cannot list the initramfs: {e}"));
    let out = std::fs::File::create(guest.join("initrd.cpio"))
        .unwrap_or_else(|e| panic!("cannot create initrd: {e}"));
    let mut child = Command::new(cpio)
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&initrd)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run cpio: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&list.stdout).unwrap_or_else(|e| panic!("cannot feed cpio: {e}"));
    }
    let status = child.wait().unwrap_or_else(|e| panic!("cpio: {e}"));
    assert!(status.success(), "cpio failed");
    let _ = std::fs::remove_dir_all(&initrd);
}

/// The shared libraries `binaries` load, as `ldd` lists them (with the loader).
fn libraries(binaries: &[&Path]) -> Vec<PathBuf> {
    let output =
        Command::new("ldd").args(binaries).output().unwrap_or_else(|e| panic!("cannot run ldd: {e}"));
    let mut found: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/') && !word.ends_with(':'))
        .map(PathBuf::from)
        .collect();
    found.sort();
    found.dedup();
    found
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot make {} executable: {e}", path.display()));
}
