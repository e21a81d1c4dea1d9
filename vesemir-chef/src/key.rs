//! The client's RSA private key: loaded once from PEM, used only to sign, never printed.

use std::fmt;
use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;

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

    /// Reads and parses a PEM RSA private key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
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
