//! Vesemir's [`Executor`](vesemir_core::ports::Executor) port over SSH, with libssh2 (the
//! `ssh2` crate): key file or ssh-agent authentication, host keys checked against known_hosts,
//! one session per host reused for all its steps, commands with environment, timeout (the
//! remote process group is killed) and line-by-line output, atomic uploads.
//!
//! # How a step runs on the host
//!
//! - The channel's command is `exec env NAME='value'... /bin/sh -c '<wrapper>' vesemir-step
//!   '<script>'`. Environment variables travel as shell-quoted `env` arguments, not as SSH
//!   `env` requests, so sshd's `AcceptEnv` does not matter; names must be shell identifiers
//!   (anything else is refused as [`PortError::Rejected`](vesemir_core::PortError::Rejected)).
//! - The wrapper runs the script with `/bin/sh` in a new process group (`setsid`), stdin from
//!   `/dev/null`, and a watchdog that kills the whole group (TERM, then KILL after 1 s) when
//!   the channel's stdin closes. The executor closes the channel when the step times out or
//!   its future is dropped, so the remote command never outlives its step. A step that ends by
//!   itself leaves background daemons it started alone.
//! - A step succeeds only with exit code 0 *and* the wrapper's end marker (a line with a
//!   per-step nonce that it writes on stderr after the script, and that never reaches the
//!   output): libssh2 reads a channel that closed without an exit status as code 0. A script
//!   killed by a signal is reported with that signal, not as code 128+N.
//! - Uploads stream the file into `cat` writing `<dest>.vesemir-<nonce>.tmp` (umask 077),
//!   check its size, `chmod`, and `mv -f` it over the destination: readers see the old file or
//!   the new one, never a partial one. No SFTP or SCP server is needed.
//! - Connecting (every attempt, retries and their pauses) is bounded by the connect timeout
//!   as a whole; a host that does not answer within it is unreachable.
//! - Host locks (one rollout per server, across machines) are a file in a lock directory on
//!   each host, created atomically with `ln`; see [`SshExecutor::with_lock_dir`].
//! - Hosts need a POSIX `/bin/sh`, `env`, `setsid` (util-linux), `cat`, `wc`, `chmod`, `mv`;
//!   locks also need `date +%s`, `stat -c %Y` (GNU or busybox), `ln`, `touch`, `head`.
//!
//! # Threads
//!
//! libssh2 is blocking C code: every call runs on tokio's blocking pool (one thread per host
//! while it works), in non-blocking mode with the socket watched through `mio`, so every wait
//! is bounded by the step's deadline. The async workers never touch libssh2.
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
mod key;
mod known_hosts;
mod lock;
mod output;
mod remote;
mod wait;

pub use config::{HostKeyMode, Passphrase, SshAuth, SshConfig};
pub use executor::SshExecutor;
