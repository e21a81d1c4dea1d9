//! Host key verification against a known_hosts file: strict, accept-new (trust on first use,
//! appending to the file) or off.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, KnownHostKeyFormat, Session};

use crate::config::HostKeyMode;
use crate::error::SshError;

/// Serializes appends to known_hosts files within this process.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// Checks the key `session` received from `address:port` under `mode`.
pub(crate) fn verify(
    session: &Session,
    address: &str,
    port: u16,
    known_hosts: &Path,
    mode: HostKeyMode,
) -> Result<(), SshError> {
    let host_port = if port == 22 { address.to_owned() } else { format!("[{address}]:{port}") };
    let file_error =
        |reason: String| SshError::KnownHosts { known_hosts: known_hosts.display().to_string(), reason };
    let (key, key_type) =
        session.host_key().ok_or_else(|| file_error("the server sent no host key".into()))?;
    let fingerprint = fingerprint(session);
    let type_name = key_type_name(key_type);
    if mode == HostKeyMode::Off {
        tracing::warn!(
            host = %host_port, %fingerprint,
            "host key NOT verified (host_key_mode = off): this connection is open to a man-in-the-middle"
        );
        return Ok(());
    }
    let mut hosts = session.known_hosts().map_err(|e| file_error(e.to_string()))?;
    if known_hosts.exists() {
        hosts
            .read_file(known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| file_error(format!("cannot read it: {e}")))?;
    }
    match hosts.check_port(address, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SshError::ChangedHostKey {
            host_port,
            known_hosts: known_hosts.display().to_string(),
            key_type: type_name.into(),
            fingerprint,
        }),
        CheckResult::NotFound if mode == HostKeyMode::AcceptNew => {
            append(session, &host_port, key, key_type, known_hosts).map_err(file_error)?;
            tracing::info!(host = %host_port, %fingerprint, file = %known_hosts.display(),
                "new host key trusted on first use (host_key_mode = accept-new) and added");
            Ok(())
        }
        CheckResult::NotFound => Err(SshError::UnknownHostKey {
            host_port,
            known_hosts: known_hosts.display().to_string(),
            key_type: type_name.into(),
            fingerprint,
        }),
        CheckResult::Failure => Err(file_error(format!("libssh2 could not check the key of {host_port}"))),
    }
}

/// Appends one plain `host key-type base64` line, formatted by libssh2 itself.
fn append(
    session: &Session,
    host_port: &str,
    key: &[u8],
    key_type: HostKeyType,
    file: &Path,
) -> Result<(), String> {
    if matches!(key_type, HostKeyType::Unknown) {
        return Err("the server's host key type is unknown".into());
    }
    let format = KnownHostKeyFormat::from(key_type);
    let mut fresh = session.known_hosts().map_err(|e| e.to_string())?;
    fresh.add(host_port, key, "added by vesemir (accept-new)", format).map_err(|e| e.to_string())?;
    let entry =
        fresh.iter().map_err(|e| e.to_string())?.into_iter().next().ok_or("libssh2 lost the new entry")?;
    let mut line = fresh.write_string(&entry, KnownHostFileKind::OpenSSH).map_err(|e| e.to_string())?;
    if !line.ends_with('\n') {
        line.push('\n');
    }
    let _guard = APPEND_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("cannot open it to append: {e}"))?;
    let needs_newline = std::fs::read(file).map(|b| !b.is_empty() && !b.ends_with(b"\n")).unwrap_or(false);
    let text = if needs_newline { format!("\n{line}") } else { line };
    out.write_all(text.as_bytes()).map_err(|e| format!("cannot append to it: {e}"))
}

/// The key's fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64.
fn fingerprint(session: &Session) -> String {
    match session.host_key_hash(HashType::Sha256) {
        Some(hash) => format!("SHA256:{}", base64_unpadded(hash)),
        None => "(unknown)".into(),
    }
}

fn key_type_name(key_type: HostKeyType) -> &'static str {
    match key_type {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_without_padding() {
        assert_eq!(base64_unpadded(b""), "");
        assert_eq!(base64_unpadded(b"f"), "Zg");
        assert_eq!(base64_unpadded(b"fo"), "Zm8");
        assert_eq!(base64_unpadded(b"foo"), "Zm9v");
        assert_eq!(base64_unpadded(b"foobar"), "Zm9vYmFy");
    }
}
