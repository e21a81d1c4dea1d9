//! The client's RSA private key: loaded once from PEM, used only to sign, never printed.

use std::fmt;
use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use vesemir_core::key_file::{check_key_permissions, KeyFilePermissions};

/// Why a client key could not be loaded. Never contains the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read the Chef client key file {path}: {source}")]
    Read {
        /// The key file's path as configured.
        path: String,
        /// Why reading it failed (missing, not readable by this user...).
        #[source]
        source: std::io::Error,
    },
    /// The key file's group or others may read or change it.
    #[error("Chef client key: {0}")]
    Unprotected(#[from] vesemir_core::key_file::UnprotectedKey),
    /// The text is not a PEM RSA private key.
    #[error(
        "the Chef client key is not a PEM RSA private key (expected `-----BEGIN RSA PRIVATE KEY-----` \
         or an unencrypted `-----BEGIN PRIVATE KEY-----` holding an RSA key)"
    )]
    NotRsaPem,
}

/// A Chef client's RSA private key. `Debug` shows only its size.
#[derive(Clone)]
pub struct ClientKey {
    rsa: Rsa<Private>,
    pkey: PKey<Private>,
}

impl ClientKey {
    /// Parses a PEM RSA private key (PKCS#1 or unencrypted PKCS#8).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        // The OpenSSL error stack may quote parts of the input, so it is dropped here.
        let pkey = PKey::private_key_from_pem(pem).map_err(|_| KeyError::NotRsaPem)?;
        let rsa = pkey.rsa().map_err(|_| KeyError::NotRsaPem)?;
        Ok(Self { rsa, pkey })
    }

    /// Reads and parses a PEM RSA private key file, refused when its group or others may read
    /// it (see [`vesemir_core::key_file`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let path = path.as_ref();
        let read_error = |source| KeyError::Read { path: path.display().to_string(), source };
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        let permissions = KeyFilePermissions { mode: metadata.mode(), owner_uid: metadata.uid() };
        check_key_permissions(path, permissions)?;
        let mut pem = Vec::new();
        file.read_to_end(&mut pem).map_err(read_error)?;
        Self::from_pem(&pem)
    }

    /// The key's size in bits.
    pub fn bits(&self) -> u32 {
        self.rsa.size() * 8
    }

    pub(crate) fn rsa(&self) -> &Rsa<Private> {
        &self.rsa
    }

    pub(crate) fn pkey(&self) -> &PKey<Private> {
        &self.pkey
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey(RSA {} bits, redacted)", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_key_file_others_may_read_is_refused_naming_it_its_mode_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.pem");
        std::fs::write(&path, include_str!("../tests/fixtures/test-client.pem")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let refused = ClientKey::from_file(&path).expect_err("too open").to_string();
        let shown = path.display();
        assert_eq!(
            refused,
            format!("Chef client key: UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {shown} are too open (any user of the machine may use it); a private key must not be accessible by others: run `chmod 600 {shown}`")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(ClientKey::from_file(&path).expect("0600 loads").bits(), 2048);
        // Read by its group: refused unless root owns it (a packaged service's group key).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let owned_by_root = std::fs::metadata(&path).expect("stat").uid() == 0;
        assert_eq!(ClientKey::from_file(&path).is_ok(), owned_by_root);
    }
}
