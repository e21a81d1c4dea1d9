//! The libvirt adapter against a real libvirtd (vesemir-testkit's lab): a disk cloned from the
//! template, a TCG guest defined and started from the template XML, read back with its size,
//! its host key read from its console and matching the one SSH presents (then a login that
//! trusts only that key), then destroyed and deleted with nothing left; a domain that fails to
//! start leaves no definition behind.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use vesemir_core::provision::{HypervisorPort, Size, VmName};
use vesemir_provision::ssh_probe::scan_host_key;
use vesemir_provision::{LibvirtConfig, VirshHypervisor};
use vesemir_testkit::libvirt::{LibvirtLab, POOL, TEMPLATE_VOLUME};

fn config(lab: &LibvirtLab, template: String) -> LibvirtConfig {
    LibvirtConfig {
        console_log: Some(lab.console_path("{name}").display().to_string()),
        ..LibvirtConfig::new(lab.uri().to_owned(), POOL.to_owned(), TEMPLATE_VOLUME.to_owned(), template)
    }
}

#[tokio::test]
async fn a_guest_is_created_reached_with_its_console_key_and_destroyed() {
    let lab = LibvirtLab::start();
    let hypervisor = VirshHypervisor::new(config(&lab, lab.domain_template()));
    let vm = VmName::new("vm1").unwrap();
    let size = Size { cores: 1, memory_mib: 256, disk_gib: 1 };
    let address = Ipv4Addr::new(127, 55, 0, 21);
    assert!(hypervisor.guests().await.unwrap().is_empty());

    let started = Instant::now();
    hypervisor.create_disk(&vm, size).await.unwrap();
    assert!(hypervisor.create_disk(&vm, size).await.is_err(), "a disk is never cloned over another");
    hypervisor.start_domain(&vm, size, address).await.unwrap();
    let guests = hypervisor.guests().await.unwrap();
    assert_eq!(guests.len(), 1);
    assert_eq!(guests[0].name, "vm1");
    assert_eq!(guests[0].size, size);

    let deadline = Instant::now() + Duration::from_secs(90);
    let console = loop {
        if let Some(key) = hypervisor.console_host_key(&vm).await.unwrap() {
            break key;
        }
        assert!(Instant::now() < deadline, "no host key on the console:\n{}", lab.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let presented = loop {
        if let Some(key) = scan_host_key(lab.ssh_address(address), Duration::from_secs(3)).await.unwrap() {
            break key;
        }
        assert!(Instant::now() < deadline, "SSH never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(presented, console, "SSH presents the key the console showed");
    eprintln!("guest reachable by SSH {:?} after the disk clone began", started.elapsed());

    // A login that trusts only the console's key.
    let known_hosts = lab.images_dir().with_file_name("known_hosts");
    std::fs::write(&known_hosts, format!("[{address}]:{} {console}\n", lab.ssh_port())).unwrap();
    let output = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(lab.client_key())
        .args(["-p", &lab.ssh_port().to_string(), &format!("root@{address}"), "echo ready"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ready",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    hypervisor.destroy_domain(&vm).await.unwrap();
    hypervisor.delete_disk(&vm).await.unwrap();
    assert!(hypervisor.guests().await.unwrap().is_empty());
    assert!(!lab.virsh(&["vol-list", "--pool", POOL]).contains("vm1.img"));
    // Undos run again are no error.
    hypervisor.destroy_domain(&vm).await.unwrap();
    hypervisor.delete_disk(&vm).await.unwrap();
}

#[tokio::test]
async fn a_domain_that_fails_to_start_is_not_left_defined() {
    let lab = LibvirtLab::start();
    let broken = lab.domain_template().replace("/guest/vmlinuz", "/guest/no-such-kernel");
    let hypervisor = VirshHypervisor::new(config(&lab, broken));
    let vm = VmName::new("vm2").unwrap();
    let size = Size { cores: 1, memory_mib: 128, disk_gib: 1 };
    hypervisor.create_disk(&vm, size).await.unwrap();
    let error = hypervisor.start_domain(&vm, size, Ipv4Addr::new(127, 55, 0, 22)).await.unwrap_err();
    assert!(error.to_string().contains("start"), "{error}");
    assert!(hypervisor.guests().await.unwrap().is_empty(), "the failed domain is undefined again");
    hypervisor.delete_disk(&vm).await.unwrap();
}
