//! Vesemir's [`Executor`](vesemir_core::ports::Executor) port over SSH, with libssh2 (the
//! `ssh2` crate): key file or ssh-agent authentication, host keys checked against known_hosts,
//! one session per host reused for all its steps, commands with environment, timeout (the
//! remote process group is killed) and line-by-line output, atomic uploads.
//!
//! ```no_run
//! use vesemir_ssh::{SshAuth, SshConfig, SshExecutor};
//!
//! let mut config = SshConfig::new("deploy", SshAuth::KeyFile { path: "/etc/vesemir/id_ed25519".into(), passphrase: None });
//! config.known_hosts = "/etc/vesemir/known_hosts".into();
//! let executor = SshExecutor::new(config);
//! # let _ = executor;
//! ```
#![warn(missing_docs)]

mod command;
mod config;
mod connection;
mod error;
mod executor;
mod known_hosts;
mod output;
mod remote;
mod wait;

pub use config::{HostKeyMode, Passphrase, SshAuth, SshConfig};
pub use executor::SshExecutor;
