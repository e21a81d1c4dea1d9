//! Reading the SSH host key a machine presents, through OpenSSH's `ssh-keyscan` (no login, no
//! trust: the key is only read, and the provisioning machine decides whether it is the one the
//! console showed).

use std::net::SocketAddr;
use std::time::Duration;

use vesemir_core::provision::SshHostKey;
use vesemir_core::PortError;

use crate::command::run;

/// The ed25519 host key SSH presents at `address`, or `None` when nothing answers there yet.
pub async fn scan_host_key(address: SocketAddr, timeout: Duration) -> Result<Option<SshHostKey>, PortError> {
    let port = address.port().to_string();
    let ip = address.ip().to_string();
    let seconds = timeout.as_secs().max(1).to_string();
    let output = run(
        "ssh-keyscan",
        &["-T", seconds.as_str(), "-p", port.as_str(), "-t", "ed25519", ip.as_str()],
        None,
        timeout + Duration::from_secs(1),
    )
    .await?;
    // Lines are `HOST ALGORITHM KEY` (comments start with '#').
    Ok(output
        .stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.split_once(' ').and_then(|(_, key)| SshHostKey::parse(key).ok())))
}
