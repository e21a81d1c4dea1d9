//! Exit codes, and the error that carries one.

use std::fmt;
use std::process::ExitCode;

/// How `vesemir` ends. Documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: every host succeeded (or the check passed).
    Success = 0,
    /// 1: the deployment failed, stopped, or was cancelled.
    DeploymentFailed = 1,
    /// 2: bad input or configuration, or hosts locked by another deployment; nothing was changed.
    BadInput = 2,
    /// 3: infrastructure unreachable before anything changed.
    Unreachable = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// An error that ends the command with an exit code and a message for a person.
#[derive(Debug)]
pub struct Failure {
    /// The code the process ends with.
    pub exit: Exit,
    /// What went wrong and what to do.
    pub message: String,
}

impl Failure {
    /// Bad input or configuration.
    pub fn input(message: impl fmt::Display) -> Self {
        Self { exit: Exit::BadInput, message: message.to_string() }
    }

    /// Infrastructure unreachable.
    pub fn unreachable(message: impl fmt::Display) -> Self {
        Self { exit: Exit::Unreachable, message: message.to_string() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// What the help says about exit codes.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  every host succeeded (plan: every host reachable; config check: no problem)
  1  the deployment failed, stopped after too many failures, or was cancelled
  2  bad input or configuration, or hosts locked by another deployment: nothing was changed
  3  infrastructure unreachable before anything changed (Chef, HAProxy, SSH); unlock/locks:
     a host's lock could not be read or broken";

/// What the help of `history`, `retry`, `restore` and `rollback` says about exit codes.
pub const FOLLOW_UP_EXIT_CODES_HELP: &str = "Exit codes:
  0  done: history listed; the retry or rollback succeeded on every host; every server restored
  1  the retry or rollback deployment failed, stopped or was cancelled; a server failed its
     health gate and stays out of rotation (the reason is shown)
  2  bad input, nothing to act on (unknown run, no previous version), or hosts locked by another
     deployment: nothing was changed
  3  infrastructure unreachable before anything changed (Chef, HAProxy, SSH, the server)";

/// What the help of `vesemir vm ...` says about exit codes.
pub const VM_EXIT_CODES_HELP: &str = "Exit codes:
  0  done: the VM is ready (create, show), destroyed with nothing left (destroy), its create
     cancelled with nothing left (cancel); list and show answered
  1  the create failed or was cancelled, the server was interrupted, or parts are left behind
     (named, with the command to go on, e.g. `vesemir vm destroy NAME`)
  2  bad input, refused by the server (an unknown owner or flavor, a name in use, a limit: the
     field is named), or destroy without --yes off a terminal: nothing was changed
  3  the server unreachable";
