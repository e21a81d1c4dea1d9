//! Addresses and ports of one lab: a /24 of its own in 127.0.0.0/8 (so labs running in parallel
//! never collide), held by a lock file, and ports that are free on every address that uses them.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{LabError, LabResult};

/// A `127.X.Y.0/24` this lab owns until it is dropped.
#[derive(Debug)]
pub struct Subnet {
    prefix: [u8; 3],
    lock: PathBuf,
}

impl Subnet {
    /// Claims a random /24 no other lab on this machine holds (a lock file in the temp dir).
    pub fn claim() -> LabResult<Self> {
        let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0) as u64
            ^ (u64::from(std::process::id()) << 20);
        for _ in 0..1000 {
            // xorshift: cheap and good enough to spread labs over 127.20.0.0 - 127.249.255.0.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let prefix = [127, 20 + (seed % 230) as u8, ((seed >> 8) % 256) as u8];
            let lock = std::env::temp_dir()
                .join(format!("vesemir-lab-{}.{}.{}.0.lock", prefix[0], prefix[1], prefix[2]));
            if std::fs::OpenOptions::new().write(true).create_new(true).open(&lock).is_ok() {
                return Ok(Self { prefix, lock });
            }
        }
        Err(LabError::new(
            "cannot claim a loopback /24 for the lab: 1000 tries found lock files in the temp dir",
        ))
    }

    /// The address `127.X.Y.last`.
    pub fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], last)
    }

    /// A port free on every one of `addresses` a moment ago.
    pub fn free_port_on(&self, addresses: &[Ipv4Addr]) -> LabResult<u16> {
        for _ in 0..200 {
            let port = vesemir_testkit::process::free_port();
            let held: Vec<TcpListener> = addresses
                .iter()
                .filter_map(|a| TcpListener::bind(SocketAddr::from((*a, port))).ok())
                .collect();
            if held.len() == addresses.len() {
                return Ok(port);
            }
        }
        Err(LabError::new(format!(
            "no port is free on all {} lab addresses after 200 tries",
            addresses.len()
        )))
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}
