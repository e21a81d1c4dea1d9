//! A private key read into memory once ([`SshExecutor::load_key`](crate::SshExecutor::load_key)),
//! so that opening a session reads no file: a server reads its key at start and again only when
//! told to reload.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::SshError;

/// The text of a private key file (OpenSSH or PEM), as read from `path`. `Debug` shows the path
/// only.
#[derive(Clone)]
pub(crate) struct LoadedKey {
    /// Where it was read from, for messages.
    pub(crate) path: PathBuf,
    /// The key file's contents.
    pub(crate) text: String,
}

impl LoadedKey {
    /// Reads the key file at `path`, refused like ssh does when others may read it.
    pub(crate) fn read(path: &Path) -> Result<Self, SshError> {
        crate::connection::check_key_file(path).map_err(SshError::Auth)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| SshError::Auth(format!("cannot read key file {}: {e}", path.display())))?;
        if !text.contains("PRIVATE KEY-----") {
            return Err(SshError::Auth(format!(
                "key file {} is not a private key in OpenSSH or PEM format",
                path.display()
            )));
        }
        Ok(Self { path: path.to_owned(), text })
    }
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey").field("path", &self.path).field("text", &"<redacted>").finish()
    }
}
