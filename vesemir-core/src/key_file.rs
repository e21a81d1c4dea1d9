//! The one rule for private key files (SSH keys, the Chef client key, the server's TLS key):
//! nobody but their owner may read or change them, as OpenSSH requires of `~/.ssh/id_*`. Pure:
//! the caller reads the file's mode and owner (`stat`) and asks [`check_key_permissions`].
//!
//! One exception, PostgreSQL's for its server key: a key owned by root may be readable by its
//! group (mode 0640), the layout of a packaged service whose group reads root's files
//! (`root:vesemir` in `/etc/vesemir`). Group write, or any access by others, is refused always.

use std::path::Path;

/// A key file's permission bits and owner, as the caller read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFilePermissions {
    /// The mode's permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// The owner's user id.
    pub owner_uid: u32,
}

/// A private key file that others may read or change: refused, with OpenSSH's words and the
/// fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "UNPROTECTED PRIVATE KEY FILE: permissions {mode:04o} for {path} are too open ({who}); a private key must not be accessible by others: run `chmod 600 {path}`"
)]
pub struct UnprotectedKey {
    /// The key file, as configured.
    pub path: String,
    /// Its permission bits.
    pub mode: u32,
    /// Who besides the owner may use it.
    pub who: &'static str,
}

/// Refuses a key file whose group or others may read or change it (others never; the group
/// only may read a key owned by root, see the module's doc).
pub fn check_key_permissions(path: &Path, permissions: KeyFilePermissions) -> Result<(), UnprotectedKey> {
    let mode = permissions.mode & 0o7777;
    let group = mode & 0o070;
    let who = if mode & 0o007 != 0 {
        "any user of the machine may use it"
    } else if group == 0 || (permissions.owner_uid == 0 && group == 0o040) {
        return Ok(());
    } else if permissions.owner_uid == 0 {
        "its group may change it"
    } else {
        "its group may use it"
    };
    Err(UnprotectedKey { path: path.display().to_string(), mode, who })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: u32, owner_uid: u32) -> Result<(), UnprotectedKey> {
        check_key_permissions(Path::new("/etc/vesemir/key.pem"), KeyFilePermissions { mode, owner_uid })
    }

    #[test]
    fn only_the_owner_may_use_a_key_but_a_root_key_may_be_read_by_its_group() {
        for (mode, owner, ok) in [
            (0o600, 1000, true),
            (0o400, 1000, true),
            (0o700, 1000, true),
            (0o640, 1000, false),
            (0o604, 1000, false),
            (0o644, 1000, false),
            (0o660, 1000, false),
            (0o610, 1000, false),
            (0o600, 0, true),
            (0o640, 0, true),
            (0o440, 0, true),
            (0o660, 0, false),
            (0o644, 0, false),
            (0o601, 0, false),
            (0o100600, 1000, true),
        ] {
            assert_eq!(check(mode, owner).is_ok(), ok, "mode {mode:o} owner {owner}");
        }
    }

    #[test]
    fn the_refusal_names_the_file_its_mode_and_the_fix() {
        let refused = check(0o644, 1000).expect_err("too open").to_string();
        assert_eq!(
            refused,
            "UNPROTECTED PRIVATE KEY FILE: permissions 0644 for /etc/vesemir/key.pem are too open (any user of the machine may use it); a private key must not be accessible by others: run `chmod 600 /etc/vesemir/key.pem`"
        );
        assert!(check(0o640, 1000).expect_err("group").to_string().contains("its group may use it"));
    }
}
