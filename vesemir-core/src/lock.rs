//! Host locks: the types of "one rollout per server, whoever started it, wherever". The lock
//! itself lives on each host (the SSH adapter keeps a file there, the fake a shared table), so
//! two deployers on different machines contend for it; this module only says who holds a lock
//! and what taking, refreshing or releasing one gave.
//!
//! # The rules every [`Executor`](crate::ports::Executor) keeps
//!
//! - Taking a lock is atomic on the host: of two claimants racing for a free host exactly one
//!   gets [`LockOutcome::Acquired`], the other [`LockOutcome::Held`] naming the first.
//! - A holder is identified by all its fields ([`LockHolder`] equality): claiming again with
//!   the same holder gives [`LockOutcome::AlreadyOurs`] (and refreshes the lock); releasing or
//!   refreshing with another holder changes nothing.
//! - A lock nobody took or refreshed for longer than the claimant's
//!   [`stale_after`](LockClaim::stale_after), measured by the host's own clock, is stale: the
//!   next claim takes it over atomically and reports the previous holder
//!   ([`LockOutcome::TookOverStale`]). Long deployments call `refresh_lock` well within
//!   `stale_after` so their lock never looks stale.
//! - `break_lock` removes whatever lock is there (the explicit `vesemir unlock`).
//!
//! Holder fields are plain text, not the validated name types: they are information for people,
//! read back from hosts where anyone may have written anything, and they never reach a protocol
//! unquoted. [`Display`](fmt::Display) escapes control characters in them, so a hostile value
//! cannot forge lines or terminal escapes in an error message.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::name::HostName;

/// Who holds (or claims) a host's lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockHolder {
    /// The deployment's id, or a local run's id for a CLI deploy without a server.
    pub deployment: String,
    /// Who asked for the deployment: a person or a pipeline.
    pub requested_by: String,
    /// The application deployed.
    pub application: String,
    /// The environment deployed to.
    pub environment: String,
    /// Where the deployer runs: its hostname and process id, see [`LockHolder::machine_of`].
    pub machine: String,
    /// When the deployer took the lock, in seconds since the Unix epoch by the deployer's clock.
    pub since_unix: u64,
}

impl LockHolder {
    /// The [`machine`](LockHolder::machine) text for a deployer on `hostname` with process `pid`:
    /// `ci-runner-7 pid 311`.
    pub fn machine_of(hostname: &str, pid: u32) -> String {
        format!("{hostname} pid {pid}")
    }

    /// The holder as one line of JSON: what a lock file on a host contains. Never contains a
    /// raw newline (JSON escapes them), so it is one line in any line-based protocol.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and an integer cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a holder written by [`encode`](LockHolder::encode). A lock file that does not parse
    /// (written by hand, truncated, another tool's) still names a holder, so a deployer can
    /// report the lock and an operator can break it: see [`LockHolder::unreadable`].
    pub fn decode(text: &str) -> LockHolder {
        serde_json::from_str(text.trim_end()).unwrap_or_else(|_| LockHolder::unreadable(text))
    }

    /// A holder standing for a lock file whose content is not a holder; its
    /// [`machine`](LockHolder::machine) quotes the start of that content.
    pub fn unreadable(content: &str) -> LockHolder {
        let start: String = content.trim().chars().take(120).collect();
        LockHolder {
            deployment: "unknown".into(),
            requested_by: "unknown".into(),
            application: "unknown".into(),
            environment: "unknown".into(),
            machine: format!("an unreadable lock file: {start:?}"),
            since_unix: 0,
        }
    }
}

impl fmt::Display for LockHolder {
    /// `deployment 42 of shop/production (alice on ci-runner-7 pid 311)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deployment {} of {}/{} ({} on {})",
            Clean(&self.deployment),
            Clean(&self.application),
            Clean(&self.environment),
            Clean(&self.requested_by),
            Clean(&self.machine),
        )
    }
}

/// A request to take a host's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockClaim {
    /// Who claims it.
    pub holder: LockHolder,
    /// How long a lock may go untaken and unrefreshed (by the host's clock) before this claim
    /// may take it over. Every deployer of a fleet should use the same value.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

/// A lock someone holds on a host, as read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// Who holds it.
    pub holder: LockHolder,
    /// How long it has been held: the host's clock now minus
    /// [`since_unix`](LockHolder::since_unix) (zero if the deployer's clock is ahead). With the
    /// fake, by tokio's clock since it was taken.
    pub held_for: Duration,
    /// How long since it was taken or last refreshed, by the host's clock: what staleness is
    /// judged on.
    pub idle_for: Duration,
}

impl fmt::Display for HeldLock {
    /// `deployment 42 of shop/production (alice on ci-runner-7 pid 311), since 4m 12s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, since {}", self.holder, seconds(self.held_for))?;
        if self.idle_for >= Duration::from_secs(60) {
            write!(f, ", last refreshed {} ago", seconds(self.idle_for))?;
        }
        Ok(())
    }
}

/// What a claim on a host's lock gave.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a claim may be refused: check whether the lock is ours"]
pub enum LockOutcome {
    /// The host was free; the lock is ours now.
    Acquired,
    /// We already held it (same holder); it is refreshed.
    AlreadyOurs,
    /// Someone else holds it and it is not stale; nothing changed.
    Held(HeldLock),
    /// Someone else held it but it was stale; it is ours now.
    TookOverStale {
        /// Who held it.
        previous: HeldLock,
    },
}

impl LockOutcome {
    /// Whether the lock is ours after the claim.
    pub fn is_ours(&self) -> bool {
        !matches!(self, LockOutcome::Held(_))
    }
}

impl fmt::Display for LockOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockOutcome::Acquired => f.write_str("lock acquired"),
            LockOutcome::AlreadyOurs => f.write_str("lock already ours"),
            LockOutcome::Held(held) => write!(f, "locked by {held}"),
            LockOutcome::TookOverStale { previous } => {
                write!(f, "took over the stale lock of {previous}")
            }
        }
    }
}

/// A host someone else holds: the error a deployer reports when it refuses that host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is locked by {held}")]
pub struct LockConflict {
    /// The locked host.
    pub host: HostName,
    /// Who holds it, and for how long.
    pub held: HeldLock,
}

/// What releasing a lock did. Releasing never takes away a lock someone else holds, so every
/// ending of a deployment may release without checking first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// It was ours and is gone.
    Released,
    /// There was no lock (already released, or broken by an operator).
    NotHeld,
    /// Someone else holds it (ours was broken or taken over as stale); it is left alone.
    HeldByOther(HeldLock),
}

impl fmt::Display for ReleaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseOutcome::Released => f.write_str("lock released"),
            ReleaseOutcome::NotHeld => f.write_str("no lock to release"),
            ReleaseOutcome::HeldByOther(held) => {
                write!(f, "not released: the lock now belongs to {held}")
            }
        }
    }
}

/// What refreshing a lock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// It is ours and its idle time starts again.
    Refreshed,
    /// It is no longer ours: broken (`None`) or taken over by someone else.
    Lost {
        /// Who holds it now, if anyone.
        now_held_by: Option<HeldLock>,
    },
}

impl fmt::Display for RefreshOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefreshOutcome::Refreshed => f.write_str("lock refreshed"),
            RefreshOutcome::Lost { now_held_by: None } => f.write_str("lock lost: it was broken"),
            RefreshOutcome::Lost { now_held_by: Some(held) } => {
                write!(f, "lock lost: it now belongs to {held}")
            }
        }
    }
}

/// A duration to the second, as people read it: `4m 12s`.
fn seconds(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(duration.as_secs()))
}

/// Text with control characters escaped (`\n`, `\u{1b}`), so a field cannot forge lines.
struct Clean<'a>(&'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> LockHolder {
        LockHolder {
            deployment: "42".into(),
            requested_by: "alice".into(),
            application: "shop".into(),
            environment: "production".into(),
            machine: LockHolder::machine_of("ci-runner-7", 311),
            since_unix: 1_700_000_000,
        }
    }

    #[test]
    fn a_conflict_reads_well() {
        let held = HeldLock {
            holder: alice(),
            held_for: Duration::from_millis(252_700),
            idle_for: Duration::from_secs(3),
        };
        let conflict = LockConflict { host: HostName::new("web-3").expect("name"), held };
        assert_eq!(
            conflict.to_string(),
            "web-3 is locked by deployment 42 of shop/production (alice on ci-runner-7 pid 311), since 4m 12s"
        );
    }

    #[test]
    fn a_long_idle_lock_says_when_it_was_refreshed() {
        let held = HeldLock {
            holder: alice(),
            held_for: Duration::from_secs(3600),
            idle_for: Duration::from_secs(600),
        };
        assert!(held.to_string().ends_with("since 1h, last refreshed 10m ago"), "{held}");
    }

    #[test]
    fn hostile_fields_cannot_forge_lines() {
        let holder = LockHolder { requested_by: "eve\nweb-4 is free\u{1b}[2J".into(), ..alice() };
        let text = holder.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert!(text.contains(r"eve\nweb-4 is free\u{1b}[2J"), "{text}");
    }

    #[test]
    fn encode_is_one_line_and_round_trips() {
        let holder = LockHolder { machine: "a\nb 'c' \"d\" $(e)".into(), ..alice() };
        let line = holder.encode();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(LockHolder::decode(&format!("{line}\n")), holder);
    }

    #[test]
    fn an_unreadable_lock_file_still_names_something() {
        let holder = LockHolder::decode("locked by bob\n");
        assert_eq!(holder.deployment, "unknown");
        assert!(holder.machine.contains("locked by bob"), "{holder:?}");
    }

    #[test]
    fn outcomes_say_whether_the_lock_is_ours() {
        let held = HeldLock { holder: alice(), held_for: Duration::ZERO, idle_for: Duration::ZERO };
        assert!(LockOutcome::Acquired.is_ours());
        assert!(LockOutcome::AlreadyOurs.is_ours());
        assert!(LockOutcome::TookOverStale { previous: held.clone() }.is_ours());
        assert!(!LockOutcome::Held(held).is_ours());
    }
}
